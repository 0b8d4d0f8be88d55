"""Regression check of the crown convolution's speed: a new ``bench_sconv.py`` JSON against a reference one.

Each case is compared by its ratio to cuDNN measured in the same run (so runs on different days or machines of the
same kind compare fairly): per layer and dtype ``ratio_vs_conv2d`` (eager) and ``graph_ratio_vs_conv2d`` (graphed),
per U-Net size and dtype ``time_ratio`` and ``memory_ratio`` against the planar twin. A case whose ratio grew by
more than ``--tolerance`` (default 10%) is a regression; so is a ratio that is not a finite number. Cases present in
only one of the two files are listed, not failed. Run it on the GPU machine after the benchmark, not in CI:

    python benchmarks/bench_sconv.py --only layers unet --disco none --out results/sconv
    python benchmarks/check_regression.py results/sconv/bench.json             # against results_h100.json

Exit status 1 if any case regressed.
"""

import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REFERENCE = os.path.join(HERE, "results_h100.json")
LAYER_RATIOS = ("ratio_vs_conv2d", "graph_ratio_vs_conv2d")
UNET_RATIOS = ("time_ratio", "memory_ratio")


def ratios(report):
    """``{(section, case, dtype, ratio name): value}`` of a ``bench_sconv.py`` report."""
    out = {}
    for row in report.get("layers", []):
        for key in LAYER_RATIOS:
            if key in row:
                out[("layer", row["name"], row["dtype"], key)] = row[key]
    for row in report.get("unet", []):
        for key in UNET_RATIOS:
            if key in row:
                out[("unet", f"{row['height']}x{row['width']}", row["dtype"], key)] = row[key]
    return out


def compare(reference, new, tolerance):
    """Rows ``(key, reference ratio, new ratio, change, status)`` for every key of either report; ``status`` is
    ``'ok'``, ``'REGRESSION'``, ``'only in reference'`` or ``'only in new'``."""
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    ref, cur = ratios(reference), ratios(new)
    rows = []
    for key in sorted(ref.keys() | cur.keys()):
        if key not in cur:
            rows.append((key, ref[key], None, None, "only in reference"))
        elif key not in ref:
            rows.append((key, None, cur[key], None, "only in new"))
        else:
            a, b = float(ref[key]), float(cur[key])
            change = b / a - 1 if math.isfinite(a) and a > 0 else math.nan
            good = math.isfinite(b) and math.isfinite(change) and change <= tolerance
            rows.append((key, a, b, change, "ok" if good else "REGRESSION"))
    return rows


def load(path, name):
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"{name}: cannot read a bench_sconv.py JSON from {path!r}: {error}") from None
    if not isinstance(report, dict) or not ({"layers", "unet"} & report.keys()):
        raise SystemExit(f"{name}: {path!r} has no 'layers' or 'unet' section: not a bench_sconv.py JSON")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("new", help="bench.json of the run to check")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="reference bench JSON (results_h100.json)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="largest allowed growth of a ratio (0.10)")
    args = parser.parse_args(argv)
    reference, new = load(args.reference, "--reference"), load(args.new, "new")
    try:
        rows = compare(reference, new, args.tolerance)
    except ValueError as error:
        parser.error(f"--{error}")
    env_ref, env_new = reference.get("environment", {}), new.get("environment", {})
    print(f"reference: {env_ref.get('device')} torch {env_ref.get('torch')} {env_ref.get('date')}")
    print(f"new:       {env_new.get('device')} torch {env_new.get('torch')} {env_new.get('date')}")
    for (section, case, dtype, key), a, b, change, status in rows:
        shown = [f"{v:.3f}" if v is not None else "-" for v in (a, b)]
        delta = f"{change:+.1%}" if change is not None and math.isfinite(change) else "-"
        print(f"{section:5s} {case:28s} {dtype:4s} {key:22s} {shown[0]:>7s} -> {shown[1]:>7s} {delta:>8s}  {status}")
    regressed = sum(row[-1] == "REGRESSION" for row in rows)
    compared = sum(row[-1] in ("ok", "REGRESSION") for row in rows)
    print(f"{regressed} of {compared} compared ratios regressed by more than {args.tolerance:.0%}")
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())

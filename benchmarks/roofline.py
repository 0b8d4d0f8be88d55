"""Each layer row of a ``bench_sconv.py`` JSON against the device's limits: what the 1.0x-of-cuDNN target asks.

Per row (one fwd+bwd step: forward, input gradient, weight gradient) for our crown convolution and for cuDNN's
equal-tap ``nn.Conv2d``:

    FLOP = 3 x 2 B C_in C_out H W taps        (taps: the crown's mean distinct input pixels, or k^2)
    bytes >= s B H W (3 C_in + 3 C_out)       (x read twice, dx written; y written, dy read twice; s = 4 or 2)

the time a device with the peak rates below would need (the larger of FLOP / peak and bytes / bandwidth), and the
share of that bound each side reaches graphed (CUDA-graph replay: GPU time alone). ``taps ratio`` = crown taps / k^2
is how much more arithmetic the crown does than its planar twin: a row with taps ratio r reaches 1.0x of cuDNN only
by running r times closer to the peak than cuDNN does. The per-tap count is the work of the ``gather`` formulation;
``mix_first`` / ``project_first`` move the channel mixing to the kernel's nodes (a GEMM over C_in x C_out x nodes and
a sparse tap sum over one side's channels), so for their rows the bound and the share are not given.

    python benchmarks/roofline.py benchmarks/results_h100_20261206.json     # prints a markdown table
"""

import argparse
import json
import sys

# NVIDIA H100 SXM5 80GB datasheet, dense (no sparsity): TF32 and BF16 tensor-core peaks, HBM3 bandwidth.
PEAKS = {
    "NVIDIA H100 80GB HBM3": {"fp32": 494.7e12, "bf16": 989.4e12, "bandwidth": 3.35e12},
}
BYTES = {"fp32": 4, "bf16": 2}


def row_bounds(row, peaks):
    """``(flop_ours, flop_conv2d, bytes, bound_ours_s, bound_conv2d_s)`` of one layer row."""
    points = row["batch"] * row["height"] * row["width"]
    per_tap = 3 * 2 * points * row["c_in"] * row["c_out"]
    flop_ours, flop_conv2d = per_tap * row["crown_pixels"], per_tap * row["planar_k"] ** 2
    traffic = BYTES[row["dtype"]] * points * 3 * (row["c_in"] + row["c_out"])
    memory_s = traffic / peaks["bandwidth"]
    peak = peaks[row["dtype"]]
    return flop_ours, flop_conv2d, traffic, max(flop_ours / peak, memory_s), max(flop_conv2d / peak, memory_s)


def table(report):
    device = report["environment"]["device"]
    if device not in PEAKS:
        raise ValueError(f"no peak rates for device {device!r}; known: {sorted(PEAKS)}")
    peaks = PEAKS[device]
    lines = [
        "| case | dtype | path | taps ratio | GFLOP per tap sum | MB moved (min) | bound ms | ours graphed ms "
        "| of bound "
        "| cuDNN graphed ms | of its bound | ours / cuDNN |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["layers"]:
        if "ours_graph_ms" not in row:
            continue
        flop, flop_conv2d, traffic, bound, bound_conv2d = row_bounds(row, peaks)
        ours, cudnn = row["ours_graph_ms"] / 1e3, row["conv2d_graph_ms"] / 1e3
        direct = row["path"] == "gather"
        ours_bound = f"{bound * 1e3:.3f}" if direct else "-"
        ours_share = f"{bound / ours:.0%}" if direct else "-"
        lines.append(
            f"| {row['name']} | {row['dtype']} | {row['path']} | {row['crown_pixels'] / row['planar_k'] ** 2:.2f} "
            f"| {flop / 1e9:.1f} | {traffic / 1e6:.0f} | {ours_bound} | {ours * 1e3:.2f} | {ours_share} "
            f"| {cudnn * 1e3:.2f} | {bound_conv2d / cudnn:.0%} | {ours / cudnn:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="bench.json of bench_sconv.py (with graphed timings)")
    args = parser.parse_args(argv)
    with open(args.report) as f:
        report = json.load(f)
    try:
        print(table(report))
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())

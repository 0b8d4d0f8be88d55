"""Check, and refit, the weights of spherical_conv's cost model against a forced-path measurement.

The measurement is a JSON written by ``bench_sconv.py --only layers --paths``: on a GPU (the CUDA weights; default
``benchmarks/results_h100_paths.json``) or on the CPU with ``--device cpu --cpu-fit`` on one thread (the CPU weights;
``benchmarks/results_cpu_paths.json``): per layer and dtype, the fwd+bwd time of every formulation forced in turn
(``paths_ms``). The cost model (``sconv/functional/conv_cost.py``) is linear in its weights, so each row's cost of each
formulation is computed once per weight and the weights can be searched on a grid, on the CPU, in seconds.

    python benchmarks/refit_cost_model.py                 # check the shipped weights, refit, print both; exit 1 if
                                                          # a shipped weight picks a path > 10% slower than the best
    python benchmarks/refit_cost_model.py --measurement benchmarks/results_cpu_paths.json   # the CPU weights
    python benchmarks/refit_cost_model.py --out new.json  # also write the weights file with the refit weights

A row passes when the path the weights pick takes at most ``--slack`` (10%) more time than the fastest measured one.
The refit changes only the weights of the measured device (keeping CUDA's ``min_lanes``), and picks, among the grid
points that pass the most rows, the one whose picks take the least total time, nearest to the shipped weights on a tie.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sconv.functional import conv_cost  # noqa: E402

# The weights of each family and the grid the refit searches (CUDA: float32 and 16-bit; "cpu": the PyTorch paths).
WEIGHTS = {
    "cuda": ("triton", "sparse", "expanded"),
    "cpu": ("gathered", "kernel", "sparse", "expanded"),
}
GRID = dict(
    cuda=dict(triton=np.arange(1.0, 4.001, 0.05), sparse=np.arange(5.0, 100.1, 5.0),
              expanded=np.arange(25.0, 400.1, 25.0)),
    cpu=dict(gathered=np.arange(50.0, 1000.1, 50.0), kernel=np.arange(40.0, 800.1, 40.0),
             sparse=np.arange(1.0, 20.1, 1.0), expanded=np.arange(10.0, 400.1, 10.0)),
)  # fmt: skip
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_rows(path, graphed=False):
    """The measured rows with at least one timed path, as dicts with ``family`` and ``times`` ({path: ms}): the eager
    times, or with ``graphed`` the CUDA-graph replays (``paths_graph_ms``, in runs since 2026-12-07)."""
    with open(path, encoding="utf-8") as file:
        measurement = json.load(file)
    cpu = measurement.get("environment", {}).get("device", "").startswith("CPU")
    rows = []
    for layer in measurement["layers"]:
        times = layer.get("paths_graph_ms" if graphed else "paths_ms") or {}
        if not times:
            continue
        dtype = None if cpu else DTYPES[layer["dtype"]]  # the Triton compute dtype, None for the PyTorch paths
        family = "cpu" if cpu else conv_cost.dtype_family(dtype)
        rows.append(dict(layer, torch_dtype=dtype, family=family, times=times))
    return rows


def weight_names(family):
    return WEIGHTS["cpu" if family == "cpu" else "cuda"]


def _costs(row, weights):
    # As spherical_conv calls it from the benchmark: stride 1, the input needs its gradient, padding "sphere".
    return conv_cost.path_costs(
        row["batch"], row["c_in"], row["c_out"], row["height"], row["width"], row["kernel_rad"], (1, 1),
        tuple(row["kernel_size"]), row["torch_dtype"], True, True, weights,
    )  # fmt: skip


def cost_terms(row):
    """``{path: (constant, per-weight coefficients)}``: the row's cost of each formulation the model may pick, as a
    linear function of the weights (a path priced at infinity is left out)."""
    names = weight_names(row["family"])
    zero = dict.fromkeys(names, 0.0)
    base = _costs(row, zero)
    terms = {}
    for path, value in base.items():
        if value == float("inf"):
            continue
        terms[path] = (value, [_costs(row, dict(zero, **{w: 1.0}))[path] - value for w in names])
    return terms


def pick(row, weights):
    """The path the cost model picks for ``row`` with ``weights`` (``path_costs``'s, as ``choose_path``)."""
    cost = _costs(row, weights)
    return min(cost, key=cost.get)


def check(rows, weights_by_family, slack=0.10):
    """``[(row, picked path, its time / the fastest time)]`` for every row, and the rows that fail (over ``slack``)."""
    results = []
    for row in rows:
        path = pick(row, weights_by_family[row["family"]])
        best = min(row["times"].values())
        ratio = row["times"][path] / best if path in row["times"] else float("inf")
        results.append((row, path, ratio))
    return results, [r for r in results if not r[2] <= 1 + slack]


def refit(rows, shipped, slack=0.10):
    """The grid point with the most passing rows, then the least total picked time, then nearest ``shipped``. ``rows``
    of one family."""
    paths = list(conv_cost.PATHS)
    kind = "cpu" if rows[0]["family"] == "cpu" else "cuda"
    names = WEIGHTS[kind]
    grid = np.stack(np.meshgrid(*(GRID[kind][w] for w in names), indexing="ij"), -1).reshape(-1, len(names))
    passing = np.zeros(len(grid))
    total = np.zeros(len(grid))
    for row in rows:
        terms = cost_terms(row)
        best = min(row["times"].values())
        cost = np.full((len(grid), len(paths)), np.inf)
        for path, (constant, coefs) in terms.items():
            cost[:, paths.index(path)] = constant + grid @ np.array(coefs)
        picked = np.argmin(cost, axis=1)  # first of equal costs, as min() over the cost dict
        time = np.array([row["times"].get(p, np.inf) for p in paths])[picked] / best
        passing += time <= 1 + slack
        total += np.minimum(time, 1e3)
    distance = np.abs(np.log(grid / np.array([shipped[w] for w in names]))).sum(1)
    order = np.lexsort((distance, np.round(total, 9), -passing))
    return dict(zip(names, (round(float(v), 4) for v in grid[order[0]]))), int(passing[order[0]])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measurement", default=os.path.join(ROOT, "benchmarks", "results_h100_paths.json"))
    parser.add_argument("--costs", default=conv_cost.COSTS_FILE, help="the weights file to check (default: shipped)")
    parser.add_argument("--slack", type=float, default=0.10, help="allowed excess time of the picked path")
    parser.add_argument("--out", help="write the weights file with the refit weights here (a new file)")
    parser.add_argument("--graphed", action="store_true", help="judge by the CUDA-graph replays, not the eager times")
    args = parser.parse_args(argv)
    with open(args.costs, encoding="utf-8") as file:
        costs = json.load(file)
    rows = load_rows(args.measurement, args.graphed)
    if not rows:
        parser.error(f"{args.measurement} has no forced-path {'graphed ' if args.graphed else ''}times")
    weights = dict(costs["cuda"], cpu=costs["cpu"])  # by family
    results, failures = check(rows, weights, args.slack)
    for row, path, ratio in results:
        mark = "ok" if ratio <= 1 + args.slack else "SLOWER"
        print(f"{row['name']:<40} {row['dtype']:<5} picks {path:<14} {ratio:5.2f}x the fastest  {mark}")
    print(f"shipped weights: {len(results) - len(failures)}/{len(results)} rows within {args.slack:.0%}")
    refitted = {}
    for family in ("float32", "16bit", "cpu"):
        family_rows = [r for r in rows if r["family"] == family]
        if not family_rows:
            continue
        shipped = {w: weights[family][w] for w in weight_names(family)}
        refitted[family], passing = refit(family_rows, shipped, args.slack)
        print(f"refit {family}: {refitted[family]} ({passing}/{len(family_rows)} rows within {args.slack:.0%}); "
              f"shipped {shipped}")  # fmt: skip
    if args.out:
        if os.path.abspath(args.out) in (os.path.abspath(args.costs), os.path.abspath(args.measurement)):
            parser.error("--out must name a new file, not one of the inputs")
        source = f"{os.path.relpath(args.measurement, ROOT)} (refit by benchmarks/refit_cost_model.py)"
        for family, refit_weights in refitted.items():
            section = costs["cpu"] if family == "cpu" else costs["cuda"][family]
            section.update(refit_weights)
            (costs["cpu"] if family == "cpu" else costs["cuda"])["source"] = source
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(costs, file, indent=2)
            file.write("\n")
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

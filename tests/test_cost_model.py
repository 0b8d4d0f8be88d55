"""The cost model's shipped CUDA weights against the forced-path GPU measurement they were fitted to
(``benchmarks/refit_cost_model.py``'s check, on the CPU from the JSON)."""

import importlib.util
import json
import math
import os
import sys

import pytest

from sconv.functional import conv_cost

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASUREMENT = os.path.join(ROOT, "benchmarks", "results_h100_paths.json")


@pytest.fixture(scope="module")
def refit():
    spec = importlib.util.spec_from_file_location(
        "refit_cost_model", os.path.join(ROOT, "benchmarks", "refit_cost_model.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows(refit):
    # The rows where a choice was measured (more than one formulation timed; the others are over the sparse cap).
    return [row for row in refit.load_rows(MEASUREMENT) if len(row["times"]) > 1]


def test_shipped_weights_pick_a_path_within_10_percent_of_the_fastest(refit, rows):
    assert len(rows) >= 30 and {row["family"] for row in rows} == {"float32", "16bit"}
    results, failures = refit.check(rows, conv_cost.COSTS["cuda"])
    assert not failures, [(row["name"], row["dtype"], path, round(ratio, 2)) for row, path, ratio in failures]
    # The check prices each row as spherical_conv's dispatch does.
    for row, path, _ in results[::7]:
        args = (row["batch"], row["c_in"], row["c_out"], row["height"], row["width"], row["kernel_rad"], (1, 1))
        assert conv_cost.choose_path(*args, tuple(row["kernel_size"]), row["torch_dtype"]) == path


def test_shipped_cpu_weights_pick_within_10_percent_except_where_the_model_ties(refit):
    """The CPU weights against the CPU forced-path measurement (one thread, the U-Net's layers at 64x128, batch 1 and
    2): every row within 10% of its fastest path, except rows where the model prices mix_first and project_first the
    same (C_in = C_out on a wrapped grid: conv4), which no weights can separate."""
    rows = refit.load_rows(os.path.join(ROOT, "benchmarks", "results_cpu_paths.json"))
    assert len(rows) == 14 and {row["family"] for row in rows} == {"cpu"}
    results, failures = refit.check(rows, dict(conv_cost.COSTS["cuda"], cpu=conv_cost.COSTS["cpu"]))
    for row, path, ratio in failures:
        costs = refit._costs(row, conv_cost.COSTS["cpu"])
        assert costs["mix_first"] == costs["project_first"], (row["name"], row["batch"], path, round(ratio, 2))
    assert len(failures) <= 2


def test_check_fails_for_weights_that_pick_slow_paths(refit, rows):
    # A gather path priced 20x too high sends conv1 and conv2 (gather 2-10x faster there) to a sparse formulation.
    weights = {family: dict(conv_cost.COSTS["cuda"][family], triton=40.0) for family in ("float32", "16bit")}
    _, failures = refit.check(rows, weights)
    assert {row["name"].split()[0] for row, _, _ in failures} >= {"conv1", "conv2"}


def test_load_rows_reads_the_eager_or_the_graphed_times(refit, tmp_path):
    layer = dict(name="conv2 64x128", dtype="bf16", paths_ms=dict(gather=2.0, mix_first=1.0))
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(dict(layers=[dict(layer, paths_graph_ms=dict(gather=0.5, mix_first=0.9)), layer])))
    assert [row["times"] for row in refit.load_rows(path)] == [dict(gather=2.0, mix_first=1.0)] * 2
    graphed = refit.load_rows(path, graphed=True)  # the second row has no graphed times: left out
    assert [(row["times"], row["family"]) for row in graphed] == [(dict(gather=0.5, mix_first=0.9), "16bit")]


def test_cpu_measurement_is_checked_and_refit_with_the_cpu_weights(refit, tmp_path):
    """A CPU forced-path JSON (``bench_sconv.py --device cpu --cpu-fit --paths``) is priced as the CPU dispatch
    prices it: rows made so that the shipped CPU weights' pick is 2x faster than the others pass; made so that another
    path is 2x faster, they fail, and the refit finds CPU weights that pick those."""
    layers = [dict(name=f"{name} 16x32", batch=1, c_in=c_in, c_out=c_out, height=16 // scale, width=32 // scale,
                   kernel_rad=r, kernel_size=list(size), dtype="fp32")
              for name, c_in, c_out, r, size, scale in [("conv1", 4, 16, math.pi / 32, (8, 16), 1),
                                                        ("conv4", 32, 32, math.pi, (8, 16), 4)]]  # fmt: skip
    picks = [conv_cost.choose_path(layer["batch"], layer["c_in"], layer["c_out"], layer["height"], layer["width"],
                                   layer["kernel_rad"], (1, 1), tuple(layer["kernel_size"]))
             for layer in layers]  # fmt: skip
    # The sparse picks of the shipped CPU weights at this size; gather is within the refit grid's reach on both.
    others = ["gather", "gather"]
    assert len(set(picks)) == 2 and all(pick != other for pick, other in zip(picks, others))

    def measurement(fastest):
        rows = [dict(layer, paths_ms={p: 1.0 if p == f else 2.0 for p in conv_cost.PATHS})
                for layer, f in zip(layers, fastest)]
        path = tmp_path / f"cpu_{'_'.join(fastest)}.json"
        path.write_text(json.dumps(dict(environment=dict(device="CPU (x86_64)"), layers=rows)))
        return refit.load_rows(path)

    weights = dict(conv_cost.COSTS["cuda"], cpu=conv_cost.COSTS["cpu"])
    rows = measurement(picks)
    assert [(row["family"], row["torch_dtype"]) for row in rows] == [("cpu", None)] * 2
    results, failures = refit.check(rows, weights)
    assert [path for _, path, _ in results] == picks and not failures
    rows = measurement(others)
    _, failures = refit.check(rows, weights)
    assert len(failures) == 2
    fitted, passing = refit.refit(rows, dict(conv_cost.COSTS["cpu"]))
    assert set(fitted) == {"gathered", "kernel", "sparse", "expanded"} and passing == 2
    results, failures = refit.check(rows, dict(weights, cpu=fitted))
    assert [path for _, path, _ in results] == others and not failures


def test_regression_check_flags_ratios_that_grew_past_the_tolerance(tmp_path, capsys):
    """benchmarks/check_regression.py on hand-made reports: +12% fails, +5% and faster pass, a NaN ratio fails, a
    case in one report only is listed, not failed; the shipped reference reads."""
    sys.path.insert(0, ROOT)
    from benchmarks import check_regression

    def report(conv1, conv2, unet_time, graphed=None):
        layers = [dict(name="conv1 64x128", dtype="fp32", ratio_vs_conv2d=conv1),
                  dict(name="conv2 64x128", dtype="bf16", ratio_vs_conv2d=conv2)]  # fmt: skip
        if graphed is not None:
            layers[0]["graph_ratio_vs_conv2d"] = graphed
        unet = [dict(height=64, width=128, dtype="fp32", time_ratio=unet_time, memory_ratio=1.1)]
        return dict(environment=dict(device="test"), layers=layers, unet=unet)

    reference = tmp_path / "ref.json"
    reference.write_text(json.dumps(report(1.0, 2.0, 1.3, graphed=1.2)))
    cases = [
        (report(1.05, 1.0, 1.3, graphed=1.2), 0),  # +5%, faster, same
        (report(1.12, 2.0, 1.3, graphed=1.2), 1),  # +12% on conv1 eager
        (report(1.0, 2.0, 1.3 * 1.11, graphed=1.2), 1),  # U-Net time +11%
        (report(1.0, float("nan"), 1.3, graphed=1.2), 1),  # NaN ratio
        (report(1.0, 2.0, 1.3), 0),  # graphed ratio not run: listed only
    ]
    for index, (new, expected) in enumerate(cases):
        path = tmp_path / f"new{index}.json"
        path.write_text(json.dumps(new))
        assert check_regression.main([str(path), "--reference", str(reference)]) == expected, index
    assert "only in reference" in capsys.readouterr().out
    rows = check_regression.compare(report(1.0, 2.0, 1.3), report(1.09, 2.0, 1.3), tolerance=0.10)
    assert [row[-1] for row in rows] == ["ok"] * 4
    with pytest.raises(ValueError, match="tolerance"):
        check_regression.compare({}, {}, tolerance=-1)
    shipped = check_regression.ratios(check_regression.load(check_regression.DEFAULT_REFERENCE, "reference"))
    assert len(shipped) >= 40 and all(isinstance(v, float) for v in shipped.values())


def test_roofline_counts_by_hand():
    """benchmarks/roofline.py: a row's FLOP and byte counts written out, the bound the larger of the two times, and
    an unknown device refused."""
    sys.path.insert(0, ROOT)
    from benchmarks import roofline

    row = dict(name="c", dtype="bf16", path="gather", batch=2, c_in=3, c_out=5, height=4, width=8, crown_pixels=10.0,
               planar_k=3, ours_graph_ms=1.0, conv2d_graph_ms=0.5)  # fmt: skip
    peaks = dict(bf16=1e9, fp32=1e9, bandwidth=1e6)
    flop, flop_conv2d, traffic, bound, bound_conv2d = roofline.row_bounds(row, peaks)
    assert flop == 6 * 2 * 4 * 8 * 3 * 5 * 10 and flop_conv2d == 6 * 2 * 4 * 8 * 3 * 5 * 9
    assert traffic == 2 * (2 * 4 * 8) * (3 * 3 + 3 * 5)
    assert bound == pytest.approx(max(flop / 1e9, traffic / 1e6)) and bound == pytest.approx(traffic / 1e6)
    report = dict(environment=dict(device="NVIDIA H100 80GB HBM3"), layers=[row])
    lines = roofline.table(report).splitlines()
    assert len(lines) == 3 and lines[2].split("|")[3].strip() == "gather"
    with pytest.raises(ValueError, match="no peak rates"):
        roofline.table(dict(environment=dict(device="a toaster"), layers=[row]))

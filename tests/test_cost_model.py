"""The cost model's shipped CUDA weights against the forced-path GPU measurement they were fitted to
(``benchmarks/refit_cost_model.py``'s check, on the CPU from the JSON)."""

import importlib.util
import os

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


def test_check_fails_for_weights_that_pick_slow_paths(refit, rows):
    # A gather path priced 20x too high sends conv1 and conv2 (gather 2-10x faster there) to a sparse formulation.
    weights = {family: dict(conv_cost.COSTS["cuda"][family], triton=40.0) for family in ("float32", "16bit")}
    _, failures = refit.check(rows, weights)
    assert {row["name"].split()[0] for row, _, _ in failures} >= {"conv1", "conv2"}

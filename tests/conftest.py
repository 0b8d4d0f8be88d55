"""Shared by the training tests: a tiny synthetic set (3 videos x 6 frames of H x W) and the arguments that train on it
on the CPU in a few steps."""

import pytest

from datasets.synthetic import ensure_synthetic

H, W = 16, 32


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    data = ensure_synthetic(tmp_path_factory.mktemp("data") / "tiny", videos=3, frames=6, height=H, width=W, seed=0)
    return data, str(tmp_path_factory.mktemp("exp"))


def common_args(dirs):
    data, exp = dirs
    return [
        "--data-dir", str(data), "--exp-dir", exp, "--frame-h", str(H), "--frame-w", str(W), "--prev-offset", "2",
        "--batch-size", "2", "--num-workers", "0", "--max-steps", "2", "--eval-interval", "0", "-lr", "0.01",
        "--device", "cpu",  # exact equalities (resume, 1 vs 2 gloo processes) are CPU claims, on a GPU machine too
    ]  # fmt: skip

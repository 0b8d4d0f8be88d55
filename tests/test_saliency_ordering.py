"""benchmarks/saliency_ordering.py: its table on hand-made run logs (the runs themselves are a GPU benchmark), its
--resume command; saliency_output_blur.py's blur against a direct sum."""

import argparse

import numpy as np
import torch

from benchmarks import saliency_ordering
from benchmarks.saliency_output_blur import gaussian_blur


def test_table_gives_mean_and_std_over_seeds_per_evaluated_epoch():
    args = argparse.Namespace(conv_types=["sconv", "sphereconv"], seeds=[1, 2])
    cc = {
        ("sconv", 1): (0.2, 0.6),
        ("sconv", 2): (0.4, 0.8),
        ("sphereconv", 1): (0.1, 0.5),
        ("sphereconv", 2): (0.3, 0.9),
    }
    logs = {
        key: [
            {"epoch": 1, "train_loss": 9.0},  # not evaluated: no column
            {"epoch": 2, "train_loss": 2.0 * key[1], "test": {"CC": first}},
            {"epoch": 4, "train_loss": 1.0 * key[1], "test": {"CC": last}},
        ]
        for key, (first, last) in cc.items()
    }
    lines = saliency_ordering.markdown(args, logs).splitlines()
    assert lines[0] == "| conv type | CC after epoch 2 | CC after epoch 4 | training loss at the end |"
    for line, conv_type in zip(lines[2:], args.conv_types):
        first = np.array([cc[conv_type, s][0] for s in args.seeds])
        last = np.array([cc[conv_type, s][1] for s in args.seeds])
        cells = [
            f"{first.mean():.3f} ± {first.std(ddof=1):.3f}",
            f"{last.mean():.3f} ± {last.std(ddof=1):.3f}",
            "1.00e+00-2.00e+00",
        ]
        assert line == f"| {conv_type} | " + " | ".join(cells) + " |"
    assert len(lines) == 4


def test_resume_continues_the_runs_instead_of_replacing_them():
    base = dict(out="/o", size=[32, 64], lr=1e-3, target_scale=1000.0, batch=8, epochs=60, eval_interval=10)
    base |= dict(num_workers=0, extra=["--own-previous", "0.5"])
    fresh = saliency_ordering.command(argparse.Namespace(resume=False, **base), "/d", "sconv", 2)
    resumed = saliency_ordering.command(argparse.Namespace(resume=True, **base), "/d", "sconv", 2)
    assert "--overwrite" in fresh and "-resume" not in fresh
    assert "-resume" in resumed and "--overwrite" not in resumed
    assert [a for a in resumed if a != "-resume"] == [a for a in fresh if a != "--overwrite"]
    assert resumed[resumed.index("-expID") + 1] == "sconv_seed2" and resumed[-2:] == ["--own-previous", "0.5"]


def test_output_blur_matches_a_direct_sum_with_wrapped_longitude_and_clamped_latitude():
    maps = torch.rand(2, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gaussian_blur(maps, 0.0), maps)
    sigma = 0.8
    radius = int(3 * sigma + 0.5)
    weights = {d: np.exp(-0.5 * (d / sigma) ** 2) for d in range(-radius, radius + 1)}
    norm = sum(weights.values())
    expected = torch.zeros_like(maps)
    for i in range(5):
        for j in range(8):
            for di, wi in weights.items():
                for dj, wj in weights.items():
                    expected[:, i, j] += wi * wj / norm**2 * maps[:, min(max(i + di, 0), 4), (j + dj) % 8]
    torch.testing.assert_close(gaussian_blur(maps, sigma), expected)

"""benchmarks/saliency_ordering.py: its table on hand-made run logs (the runs themselves are a GPU benchmark), its
--resume and --oracle commands and the oracle table; saliency_output_blur.py's blur against a direct sum."""

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


def test_oracle_scores_each_run_with_its_own_flags_and_never_overwrites_it():
    base = dict(out="/o", size=[32, 64], lr=1e-3, target_scale=1000.0, batch=8, epochs=30, eval_interval=10)
    base |= dict(num_workers=0, extra=["--frame-jitter", "20"])
    for resume in (False, True):
        args = argparse.Namespace(resume=resume, **base)
        run = saliency_ordering.command(args, "/d", "sphereconv", 3)
        scored = saliency_ordering.oracle_command(args, "/d", "sphereconv", 3)
        assert scored[-2:] == ["-test", "--oracle"] and "--overwrite" not in scored and "-resume" not in scored
        assert scored[:-2] == [a for a in run if a not in ("--overwrite", "-resume")]


def test_oracle_table_gives_both_scores_and_their_gap_per_conv_type():
    args = argparse.Namespace(conv_types=["sconv", "sphereconv"], seeds=[1, 2, 3])
    deployed = {"sconv": [0.80, 0.82, 0.84], "sphereconv": [0.70, 0.75, 0.77]}
    oracle = {"sconv": [0.85, 0.85, 0.86], "sphereconv": [0.86, 0.87, 0.88]}
    scores = {
        f"{c}_seed{s}": {"epoch": 30, "deployed": {"CC": deployed[c][i]}, "oracle": {"CC": oracle[c][i]}}
        for c in args.conv_types
        for i, s in enumerate(args.seeds)
    }
    lines = saliency_ordering.oracle_markdown(args, scores).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| conv type | epoch | CC as deployed | ORACLE")
    for line, c in zip(lines[2:], args.conv_types):
        d, o = np.array(deployed[c]), np.array(oracle[c])
        cells = [f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" for v in (d, o)] + [f"{(d - o).mean():+.3f}"]
        assert line == f"| {c} | 30 | " + " | ".join(cells) + " |"


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

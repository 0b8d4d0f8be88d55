"""benchmarks/saliency_ordering.py: its table on hand-made run logs (the runs themselves are a GPU benchmark)."""

import argparse

import numpy as np

from benchmarks import saliency_ordering


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

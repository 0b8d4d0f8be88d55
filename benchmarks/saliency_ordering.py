"""Benchmark: the convolution types on the saliency task (issue 22's last target), with ``train_unet.py`` itself.

Trains the Spherical U-Net with each ``--conv-type`` (``sconv``: the paper's crown convolutions; ``standard``: the
planar twin; ``sphereconv``: SphereNet-style) on the synthetic set (``ref.synthetic``, generated into ``--out``),
with one optimiser setting for all (Adam, ``--lr``, ``--target-scale``: docs/latitude.md, "The saliency task"), for
each seed, and scores each as deployed (its own previous maps, sphere-weighted metrics) on the test videos every
``--eval-interval`` epochs. Runs ``--parallel`` trainings at once (several fit one GPU). Writes
``saliency_ordering.json`` (every run's log) and ``saliency_ordering.md`` (CC at each evaluation, mean ± sample std over
seeds) into ``--out``. ``--resume`` continues the runs already in ``--out`` to ``--epochs`` (``train_unet.py -resume``;
give the flags they were started with). ``--oracle`` also scores each final checkpoint teacher-forced
(``train_unet.py -test --oracle``: the ground-truth previous maps, an oracle figure no deployed system has), into the
JSON's ``"oracle"`` and a second table.

Usage (from the repository root):
    python benchmarks/saliency_ordering.py --out /tmp/order --size 64 128 --parallel 3     # GPU machine
    python benchmarks/saliency_ordering.py --out /tmp/order --quick                        # CPU smoke run
    python benchmarks/saliency_ordering.py --out /tmp/order --size 64 128 --epochs 60 --resume   # on to 60 epochs
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import ref  # noqa: E402
from datasets.data import atomic_write_bytes  # noqa: E402
from datasets.synthetic import ensure_synthetic  # noqa: E402
from engine.common import read_log  # noqa: E402

CONV_TYPES = ("sconv", "standard", "sphereconv")


def command(args, data_dir, conv_type, seed):
    """The ``train_unet.py`` command of one run."""
    return [
        sys.executable,
        os.path.join(REPO, "train_unet.py"),
        "--data-dir", data_dir,
        "--exp-dir", os.path.join(args.out, "exp"),
        "-expID", f"{conv_type}_seed{seed}",
        "--frame-h", str(args.size[0]),
        "--frame-w", str(args.size[1]),
        "--conv-type", conv_type,
        "--optimizer", "adam",
        "-lr", str(args.lr),
        "--target-scale", str(args.target_scale),
        "--batch-size", str(args.batch),
        "-epochs", str(args.epochs),
        "--eval-interval", str(args.eval_interval),
        "--save-interval", str(args.epochs),
        "--num-workers", str(args.num_workers),
        "--seed", str(seed),
        "-resume" if args.resume else "--overwrite",
        *args.extra,
    ]  # fmt: skip


def oracle_command(args, data_dir, conv_type, seed):
    """The ``train_unet.py -test --oracle`` command scoring one run's latest checkpoint, with the run's own flags."""
    flags = [a for a in command(args, data_dir, conv_type, seed) if a not in ("--overwrite", "-resume")]
    return flags + ["-test", "--oracle"]


def score_oracle(args, data_dir):
    """Each run's latest checkpoint scored as deployed and teacher-forced: run name -> {epoch, deployed, oracle}."""
    scores = {}
    for seed in args.seeds:
        for conv_type in args.conv_types:
            run = f"{conv_type}_seed{seed}"
            with open(os.path.join(args.out, f"{run}_oracle.log"), "w") as log:
                subprocess.run(
                    oracle_command(args, data_dir, conv_type, seed), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                    check=True,
                )  # fmt: skip
            with open(os.path.join(args.out, "exp", run, "test_metrics.json")) as f:
                report = json.load(f)
            scores[run] = {"epoch": report["epoch"], "deployed": report["model"], "oracle": report["oracle"]["model"]}
    return scores


def oracle_markdown(args, scores):
    """CC as deployed and teacher-forced (ORACLE), mean ± sample std over seeds, and their difference."""
    lines = [
        "| conv type | epoch | CC as deployed | ORACLE: CC teacher-forced | deployed - oracle |",
        "|---|---|---|---|---|",
    ]
    for conv_type in args.conv_types:
        runs = [scores[f"{conv_type}_seed{seed}"] for seed in args.seeds]
        deployed = np.array([r["deployed"]["CC"] for r in runs])
        oracle = np.array([r["oracle"]["CC"] for r in runs])
        cells = [mean_std(deployed), mean_std(oracle)]
        epochs = "/".join(str(e) for e in sorted({r["epoch"] for r in runs}))
        lines.append(f"| {conv_type} | {epochs} | " + " | ".join(cells) + f" | {(deployed - oracle).mean():+.3f} |")
    return "\n".join(lines) + "\n"


def run_all(args, data_dir):
    """Every (conv type, seed) run, ``--parallel`` at a time; each one's log records."""
    pending = [(conv_type, seed) for seed in args.seeds for conv_type in args.conv_types]
    running, logs = {}, {}
    while pending or running:
        while pending and len(running) < args.parallel:
            conv_type, seed = pending.pop(0)
            log = open(os.path.join(args.out, f"{conv_type}_seed{seed}.log"), "w")
            process = subprocess.Popen(
                command(args, data_dir, conv_type, seed), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )
            running[conv_type, seed] = (process, log)
        for key, (process, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[key]
            if process.returncode:
                raise SystemExit(f"run {key} failed (exit {process.returncode}): see {log.name}")
            logs[key] = read_log(os.path.join(args.out, "exp", f"{key[0]}_seed{key[1]}", "log.jsonl"))
            print(f"{key[0]} seed {key[1]}: CC {[round(r['test']['CC'], 3) for r in logs[key] if 'test' in r]}")
        time.sleep(0.5)
    return logs


def mean_std(values):
    """``mean ± sample std`` (as the latitude benchmark; 0 for one value), three decimals."""
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {spread:.3f}"


def markdown(args, logs):
    """CC (mean ± sample std over seeds) of each conv type at each evaluated epoch, and the final training loss."""
    epochs = sorted({r["epoch"] for log in logs.values() for r in log if "test" in r})
    lines = ["| conv type | " + " | ".join(f"CC after epoch {e}" for e in epochs) + " | training loss at the end |"]
    lines.append("|---" * (len(epochs) + 2) + "|")
    for conv_type in args.conv_types:
        runs = [logs[conv_type, seed] for seed in args.seeds]
        cc = {e: np.array([next(r["test"]["CC"] for r in log if r["epoch"] == e) for log in runs]) for e in epochs}
        cells = [mean_std(cc[epoch]) for epoch in epochs]
        losses = [log[-1]["train_loss"] for log in runs]
        lines.append(f"| {conv_type} | " + " | ".join(cells) + f" | {min(losses):.2e}-{max(losses):.2e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created): the dataset, runs and results")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: 32 x 64, 2 epochs, one seed")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 128], metavar=("H", "W"))
    parser.add_argument("--conv-types", nargs="+", choices=CONV_TYPES, default=list(CONV_TYPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--eval-interval", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--target-scale", type=float, default=1000.0)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=1, help="trainings at once")
    parser.add_argument(
        "--resume", action="store_true", help="continue the runs in --out to --epochs (started with the same flags)"
    )
    parser.add_argument(
        "--oracle", action="store_true", help="also score each final checkpoint teacher-forced (an oracle figure)"
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more train_unet.py flags for every run")
    args = parser.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    if args.quick:
        args.size, args.seeds, args.epochs, args.eval_interval = [32, 64], args.seeds[:1], 2, 1
        args.extra += ["--max-steps", "2", "--limit", "4"]
    if min(args.epochs, args.eval_interval, args.batch, args.parallel) < 1 or args.num_workers < 0:
        parser.error("--epochs, --eval-interval, --batch and --parallel must be >= 1, --num-workers >= 0")
    os.makedirs(args.out, exist_ok=True)
    data_dir = ensure_synthetic(os.path.join(args.out, "synthetic"), **ref.synthetic)

    started = time.perf_counter()
    logs = run_all(args, data_dir)
    table = markdown(args, logs)
    oracle = score_oracle(args, data_dir) if args.oracle else None
    if oracle:
        table += "\nThe final checkpoints, as deployed and teacher-forced (ORACLE):\n\n" + oracle_markdown(args, oracle)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"synthetic": ref.synthetic},
        "seconds": round(time.perf_counter() - started, 1),
        "runs": {f"{conv_type}_seed{seed}": log for (conv_type, seed), log in logs.items()},
    }
    if oracle:
        result["oracle"] = oracle
    atomic_write_bytes(os.path.join(args.out, "saliency_ordering.json"), json.dumps(result, indent=1).encode())
    atomic_write_bytes(os.path.join(args.out, "saliency_ordering.md"), table.encode())
    print(table)


if __name__ == "__main__":
    main()

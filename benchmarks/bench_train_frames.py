"""Benchmark: ``train_unet.py`` itself on full-size JPEG frames against already-small frames (issue 24, item 2).

``bench_loader.py`` times the loader and a model step it defines; this runs the training script users launch, at
64 x 128 and batch 32, on three copies of one synthetic dataset (``datasets.synthetic``: the same scenes, gaze
points and published 128 x 256 maps; an ``index.json`` split):

    small    frames written at 128 x 64 (what the default synthetic set gives the loader)
    draft    the same scenes rendered at 960 x 480, upscaled to 1920 x 960 with film grain, JPEG quality 90
             (``bench_loader.full_size_jpeg``); trained with ``--gt-cache none``: every epoch decodes every JPEG
    cached   the 1920 x 960 copy after ``tools/build_frame_cache.py``: every epoch reads the 64 x 128 cache

Each run trains ``--epochs`` epochs (``--max-steps`` steps each) with ``--num-workers`` loader processes; the rate of
a run is frames per second over its epochs after the first (the first includes the workers' start and cuDNN's
autotuning), from the ``seconds`` and ``steps`` that ``train_unet.py`` logs per epoch. The target: full-size frames
within 10% of small ones (rate ratio >= 0.9).

Usage (from the repository root):
    python benchmarks/bench_train_frames.py --out /tmp/train_frames --num-workers 14   # GPU machine, 2-3 minutes
    python benchmarks/bench_train_frames.py --out /tmp/train_frames --quick            # CPU smoke run

Writes ``bench_train_frames.json`` into ``--out`` (datasets, caches and experiments go to ``--out/data``).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.bench_loader import RENDER_H, RENDER_W, full_size_jpeg  # noqa: E402
from datasets.data import atomic_write_bytes  # noqa: E402
from datasets.synthetic import generate, render_frame, sphere_grid, video_scene  # noqa: E402
from engine.common import read_log  # noqa: E402

FRAME_H, FRAME_W = 64, 128
FULL_H, FULL_W = 960, 1920


def write_full_size_video(root, video, frames, seed, videos, grain, render_size):
    """Rewrite the frames of video ``video`` under ``root`` as full-size JPEGs of the same scene (``video_scene``,
    rendered at ``render_size``); returns the bytes written."""
    grid = sphere_grid(*render_size)
    _, background, scene = video_scene(seed, videos, video, grid)
    grain_rng = np.random.default_rng([seed, video])
    total = 0
    for t in range(frames):
        render = Image.fromarray(render_frame(grid, background, scene, t))
        jpeg = full_size_jpeg(render, FULL_H, FULL_W, grain, grain_rng)
        atomic_write_bytes(os.path.join(root, f"video_{video:03d}", f"{t:04d}.jpg"), jpeg)
        total += len(jpeg)
    return total


def train(args, name, data_dir, extra=()):
    """Run ``train_unet.py`` on ``data_dir``; its per-epoch log records and wall time."""
    command = [
        sys.executable,
        os.path.join(REPO, "train_unet.py"),
        "--data-dir", data_dir,
        "--exp-dir", os.path.join(args.out, "data", "exp"),
        "-expID", name,
        "--frame-h", str(FRAME_H),
        "--frame-w", str(FRAME_W),
        "--batch-size", str(args.batch),
        "-epochs", str(args.epochs),
        "--max-steps", str(args.steps),
        "--num-workers", str(args.num_workers),
        "--eval-interval", "0",
        "--save-interval", str(args.epochs),
        "--overwrite",
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    wall = time.perf_counter() - started
    log = read_log(os.path.join(args.out, "data", "exp", name, "log.jsonl"))
    later = log[1:]
    seconds = sum(r["seconds"] for r in later)
    fps = args.batch * sum(r["steps"] for r in later) / seconds
    print(f"{name}: {fps:.0f} frames/s over epochs 2-{len(log)} ({wall:.1f} s in all)")
    return {"fps": fps, "epochs": log, "wall_s": round(wall, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created; its data/ subfolder is replaced)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: tiny set, batch 2, 2 epochs of 2 steps")
    parser.add_argument("--videos", type=int, default=6, help="videos of the dataset (one in four for testing)")
    parser.add_argument("--frames", type=int, default=200, help="frames per video")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not timed)")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (--max-steps)")
    parser.add_argument("--num-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--grain", type=float, default=4.0, help="film grain std of the full-size frames (levels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    render_size = (RENDER_H, RENDER_W)
    if args.quick:
        args.videos, args.frames, args.batch, args.epochs, args.steps = 2, 3, 2, 2, 2
        render_size = (48, 96)
    if min(args.videos, args.frames, args.batch, args.steps) < 1 or args.epochs < 2 or args.num_workers < 0:
        parser.error("--videos, --frames, --batch and --steps must be >= 1, --epochs >= 2, --num-workers >= 0")
    if args.videos < 2:
        parser.error("--videos must be >= 2 (the split needs a training and a test video)")

    started = time.perf_counter()
    data = os.path.join(args.out, "data")
    if os.path.isdir(data):
        shutil.rmtree(data)
    os.makedirs(data)
    small = generate(os.path.join(data, "small"), args.videos, args.frames, FRAME_H, FRAME_W, args.seed, gt_factor=2)
    full = os.path.join(data, f"{FULL_W}x{FULL_H}")
    shutil.copytree(small, full)
    with ProcessPoolExecutor(max(1, min(args.videos, os.cpu_count() or 1))) as pool:
        jobs = [(full, v, args.frames, args.seed, args.videos, args.grain, render_size) for v in range(args.videos)]
        sizes = pool.map(write_full_size_video, *zip(*jobs))
        bits = 8 * sum(sizes) / (args.videos * args.frames * FULL_H * FULL_W)
    generate_s = time.perf_counter() - started
    print(f"datasets written in {generate_s:.1f} s ({bits:.2f} bits per pixel at {FULL_W} x {FULL_H})")

    runs = {"small": train(args, "small", small)}
    runs["draft"] = train(args, "draft", full, ("--gt-cache", "none"))
    cache = os.path.join(data, "frame_cache")
    tool = [sys.executable, os.path.join(REPO, "tools", "build_frame_cache.py"), "--data-dir", full]
    tool += ["--gt-cache", cache, "--exp-dir", os.path.join(data, "exp"), "-expID", "cached"]
    tool += ["--frame-h", str(FRAME_H), "--frame-w", str(FRAME_W), "--num-workers", str(args.num_workers)]
    tic = time.perf_counter()
    subprocess.run(tool, check=True, cwd=REPO)
    cache_s = time.perf_counter() - tic
    runs["cached"] = train(args, "cached", full, ("--gt-cache", cache))

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "config": {
            "frame": [FRAME_H, FRAME_W],
            "full_size": [FULL_H, FULL_W],
            "batch": args.batch,
            "epochs": args.epochs,
            "steps_per_epoch": args.steps,
            "num_workers": args.num_workers,
            "videos": args.videos,
            "frames_per_video": args.frames,
            "grain": args.grain,
            "bits_per_pixel": bits,
        },
        "generate_s": round(generate_s, 2),
        "build_frame_cache_s": round(cache_s, 2),
        "runs": runs,
        "ratio_to_small": {name: run["fps"] / runs["small"]["fps"] for name, run in runs.items()},
    }
    atomic_write_bytes(os.path.join(args.out, "bench_train_frames.json"), json.dumps(result, indent=1).encode())
    print(f"ratio to small frames: {result['ratio_to_small']}; cache built in {cache_s:.1f} s")


if __name__ == "__main__":
    main()

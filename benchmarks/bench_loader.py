"""Benchmark: the frame loader on full-size JPEG frames against the U-Net's training step rate at 64 x 128.

Writes a small synthetic dataset (``datasets.synthetic``: the same scenes, gaze points and published 128 x 256 maps)
three times: with 128 x 64 frames ("already small", what the default synthetic set has), and with 1920 x 960 (and
with ``--large`` 3840 x 1920) JPEG frames. The large frames are rendered at 960 x 480, upscaled (bicubic) and given
film grain before the JPEG encoding (quality 90), so that they compress like camera frames (bits per pixel in the
JSON; compare with ``du`` of a real dataset's frames). Then, for each frame size and each decoding path

    exact   full decode, then bilinear resize to 64 x 128 (the loader before this benchmark)
    draft   JPEG decoded at reduced DCT scale (PIL draft), then the same resize (``frame_decode='draft'``)
    cached  the decoded 64 x 128 frame read back from the loader's cache folder (``cache_dir``, second epoch on)

it measures frames/s of one process (frame decoding alone, and whole items: frame, previous map, target) and of the
whole ``DataLoader`` at ``--workers`` processes (batch ``--batch``, pinned memory on CUDA, as ``train_unet.py``), and
the largest and mean absolute pixel difference of ``draft`` against ``exact`` (0-255 levels). On CUDA it also times
``SphericalUNet`` training steps (SphereMSE, SGD) at 64 x 128 on tensors already on the GPU, and the same steps fed by
the loader (end to end) from the small frames and from the full-size ones; the ratio of the two end-to-end rates is
the target of issue 24 (full-size within 10% of small).

Usage (from the repository root):
    python benchmarks/bench_loader.py --out results/loader --large --workers 14   # GPU machine (16 cores), 60-90 s
    python benchmarks/bench_loader.py --out /tmp/loader --quick                   # CPU smoke run, a few seconds

Writes ``bench_loader.json`` into ``--out`` (created if missing; the datasets and caches go to ``--out/data``).
"""

import argparse
import datetime
import io
import json
import os
import platform
import shutil
import sys
import time

import numpy as np
import PIL
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.data import VRVideo, atomic_write_bytes, decode_frame  # noqa: E402
from datasets.synthetic import generate, render_frame, sphere_grid, video_scene  # noqa: E402
from engine.common import float32_precision  # noqa: E402

FRAME_H, FRAME_W = 64, 128
PATHS = ("exact", "draft", "cached")
RENDER_H, RENDER_W = 480, 960  # size the large frames are rendered at before upscaling


def full_size_jpeg(render, height, width, grain, rng):
    """The JPEG bytes (quality 90) of the PIL image ``render`` upscaled (bicubic) to ``width x height`` with film
    grain of std ``grain`` levels drawn from ``rng``: compresses like a camera frame."""
    pixels = np.asarray(render.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    pixels += rng.normal(0, grain, size=(height, width, 1)).astype(np.float32)  # luminance grain
    pixels += rng.normal(0, grain / 2, size=(height, width, 3)).astype(np.float32)  # colour grain
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_datasets(folder, frames, sizes, seed, grain):
    """The small dataset and one copy per full size (same vinfo, maps, scenes); ``{name: (root, bits per pixel)}``."""
    small = generate(os.path.join(folder, "small"), 1, frames, FRAME_H, FRAME_W, seed, gt_factor=2)
    roots = {"small": (small, None)}
    grid = sphere_grid(RENDER_H, RENDER_W)
    _, background, scene = video_scene(seed, 1, 0, grid)  # the small set's one video, rendered at RENDER_H x RENDER_W
    grain_rng = np.random.default_rng(seed + 1)
    renders = [Image.fromarray(render_frame(grid, background, scene, t)) for t in range(frames)]
    for height, width in sizes:
        name = f"{width}x{height}"
        root = os.path.join(folder, name)
        shutil.copytree(small, root)
        total = 0
        for t, render in enumerate(renders):
            jpeg = full_size_jpeg(render, height, width, grain, grain_rng)
            atomic_write_bytes(os.path.join(root, "video_000", f"{t:04d}.jpg"), jpeg)
            total += len(jpeg)
        roots[name] = (root, 8 * total / (frames * height * width))
    return roots


def dataset(root, path, cache):
    """The training split of ``root`` read by ``path`` ('exact', 'draft', 'cached': draft with ``cache``)."""
    return VRVideo(
        root,
        FRAME_H,
        FRAME_W,
        1,
        index_file=None,
        frame_decode="exact" if path == "exact" else "draft",
        cache_dir=cache if path == "cached" else None,
    )


def rate(fn, count, seconds):
    """Calls per second of ``fn(i)`` for i = 0, 1, ... (mod ``count``), run for about ``seconds`` after one call."""
    fn(0)
    calls, start = 0, time.perf_counter()
    while True:
        fn(calls % count)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed


def batches(ds, workers, batch, device):
    """An endless iterator of batches of ``ds`` (sampled with replacement) as ``train_unet.py`` loads them."""
    sampler = RandomSampler(ds, replacement=True, num_samples=1 << 30)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda")
    return iter(loader)


def loader_rate(ds, workers, batch, seconds, device, step=None):
    """Frames per second of a DataLoader over ``ds``, each batch passed to ``step``, from the loader's start.

    Each worker builds whole batches and the workers start together, so batches arrive in rounds of ``workers``;
    the clock stops at the end of a round (each worker has delivered as many batches) once ``seconds`` have passed,
    which neither counts batches prefetched during a slow first round nor stops half-way through one. The workers'
    start-up is included (once per run with persistent workers, as ``train_unet.py``).
    """
    round_size = max(1, workers)
    start = time.perf_counter()
    iterator = batches(ds, workers, batch, device)
    frames = received = 0
    while received % round_size or time.perf_counter() - start < seconds:
        sample = next(iterator)
        if step is not None:
            step(sample)
        frames += sample[0].shape[0]
        received += 1
    if step is not None:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    del iterator  # stops the workers
    return frames / elapsed


def model_step(device):
    """One SphericalUNet training step at 64 x 128 (SphereMSE, SGD as train_unet.py) on a batch from the loader."""
    from models import SphericalUNet
    from sconv.module.smse import SphereMSE

    model = SphericalUNet((FRAME_H, FRAME_W)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    criterion = SphereMSE(FRAME_H, FRAME_W)

    def step(sample):
        frames, previous, targets = (x.to(device, non_blocking=True) for x in sample)
        loss = criterion(model(frames, previous * 10), targets * 10)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def model_rates(roots, args, device):
    """The U-Net's training steps per second alone (``gpu_only_fps``) and fed by the loader at ``max(--workers)``
    from each frame size and path (``end_to_end_fps/<size>/<path>``), and each end-to-end rate over the small
    frames' one (``ratio_to_small``)."""
    step = model_step(device)
    workers = max(args.workers)
    model = {"gpu_only_fps": gpu_step_rate(step, args.batch, device, args.seconds), "workers": workers}
    cases = [("small", "exact")] + [(name, path) for name in roots if name != "small" for path in PATHS]
    for name, path in cases:
        ds = dataset(roots[name][0], path, os.path.join(args.out, "data", f"cache_{name}"))
        fps = loader_rate(ds, workers, args.batch, args.seconds, device, step)
        model[f"end_to_end_fps/{name}/{path}"] = fps
        print(f"end to end {name} {path}: {fps:.0f} frames/s")
    small = model["end_to_end_fps/small/exact"]
    ends = {key.split("/", 1)[1]: fps for key, fps in model.items() if key.startswith("end_to_end")}
    model["ratio_to_small"] = {case: fps / small for case, fps in ends.items()}
    return model


def gpu_step_rate(step, batch, device, seconds):
    """Frames per second of ``step`` on one batch already on the GPU (the model alone)."""
    sample = (
        torch.rand(batch, 3, FRAME_H, FRAME_W, device=device),
        torch.rand(batch, 1, FRAME_H, FRAME_W, device=device) * 0.04,
        torch.rand(batch, 1, FRAME_H, FRAME_W, device=device) * 0.04,
    )
    for _ in range(5):
        step(sample)
    torch.cuda.synchronize(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(sample)
        steps += 1
        if steps % 10 == 0:
            torch.cuda.synchronize(device)
    torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created; datasets under OUT/data, replaced)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: 2 frames, batch 2, short timings")
    parser.add_argument("--large", action="store_true", help="also 3840 x 1920 frames")
    parser.add_argument("--workers", type=int, nargs="+", default=[max(1, (os.cpu_count() or 2) - 2)])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=12, help="frames of the synthetic video")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="timing of each loader case (one-process cases: half)"
    )
    parser.add_argument("--grain", type=float, default=4.0, help="film grain std of the large frames (0-255 levels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.seconds, args.batch = 2, 0.1, 2
    if args.frames < 1 or args.batch < 1 or min(args.workers) < 0 or not args.seconds > 0:
        parser.error("--frames and --batch must be >= 1, --workers >= 0, --seconds > 0")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(1)  # one process = one core, as one loader worker
    sizes = [(960, 1920)] + ([(1920, 3840)] if args.large else [])

    started = time.perf_counter()
    data = os.path.join(args.out, "data")
    if os.path.isdir(data):
        shutil.rmtree(data)
    os.makedirs(data)
    roots = write_datasets(data, args.frames, sizes, args.seed, args.grain)
    one = args.seconds / 2  # timing of the one-process cases
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}, {os.cpu_count()} CPUs",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "pillow": PIL.__version__},
        "config": {
            "frame": [FRAME_H, FRAME_W],
            "batch": args.batch,
            "workers": args.workers,
            "frames": args.frames,
            "seconds": args.seconds,
            "grain": args.grain,
            "jpeg_quality": 90,
        },
        "generate_s": round(time.perf_counter() - started, 2),
        "sizes": {},
    }
    print(f"datasets written in {result['generate_s']} s")

    for name, (root, bits) in roots.items():
        entry = {"bits_per_pixel": bits, "per_worker_decode_fps": {}, "per_worker_item_fps": {}, "loader_fps": {}}
        paths = ("exact",) if name == "small" else PATHS
        cache = os.path.join(args.out, "data", f"cache_{name}")
        jpgs = [os.path.join(root, "video_000", f"{t:04d}.jpg") for t in range(args.frames)]
        if name != "small":
            diffs = [
                np.abs(
                    decode_frame(p, FRAME_H, FRAME_W, "draft").astype(np.int16)
                    - decode_frame(p, FRAME_H, FRAME_W, "exact")
                )
                for p in jpgs
            ]
            entry["draft_vs_exact"] = {
                "max_abs": int(max(d.max() for d in diffs)),
                "mean_abs": float(np.mean([d.mean() for d in diffs])),
                "fraction_off_by_more_than_1": float(np.mean([(d > 1).mean() for d in diffs])),
            }
        for path in paths:
            ds = dataset(root, path, cache)
            for i in range(len(ds)):  # fills the cache ('cached'); warms the page cache
                ds.frame(*ds.items[i])
            entry["per_worker_decode_fps"][path] = rate(lambda i, ds=ds: ds.frame(*ds.items[i]), len(ds), one)
            entry["per_worker_item_fps"][path] = rate(lambda i, ds=ds: ds[i], len(ds), one)
            entry["loader_fps"][path] = {
                str(n): loader_rate(ds, n, args.batch, args.seconds, device) for n in args.workers
            }
        result["sizes"][name] = entry
        for key in ("per_worker_decode_fps", "per_worker_item_fps"):
            print(f"{name} {key}: " + ", ".join(f"{p} {v:.0f}" for p, v in entry[key].items()))
        print(f"{name} loader_fps: " + ", ".join(f"{p} {v}" for p, v in entry["loader_fps"].items()))
        if "draft_vs_exact" in entry:
            print(f"{name} draft vs exact: {entry['draft_vs_exact']}")

    if device.type == "cuda":
        result["config"]["tf32"] = True
        with float32_precision(device, tf32=True):  # as train_unet.py by default (--tf32 1)
            result["model"] = model_rates(roots, args, device)
        model = result["model"]
        print(f"model alone: {model['gpu_only_fps']:.0f} frames/s; end to end / small: {model['ratio_to_small']}")

    result["total_s"] = round(time.perf_counter() - started, 2)
    atomic_write_bytes(os.path.join(args.out, "bench_loader.json"), json.dumps(result, indent=1).encode())
    print(f"wrote {os.path.join(args.out, 'bench_loader.json')} ({result['total_s']} s)")


if __name__ == "__main__":
    main()

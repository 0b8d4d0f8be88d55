"""Benchmark: rotate_equirect on a 1920 x 960 RGB frame (and batches), spherical_upsample at the U-Net's sizes.

Each case: median over timed repetitions after warm-up; on CUDA each repetition is timed with CUDA events around
the call (the rotation's geometry, computed per call from the matrix, included; the check that the matrix is a
rotation runs where the matrix is: on the GPU it costs a device sync, hence the "rotation on the CPU" case), on the
CPU with perf_counter. CUDA cases run when a GPU is present; the CPU cases always run (fewer repetitions).

Usage (from the repository root):
    python benchmarks/bench_rotate.py --out results/rotate        # GPU machine: CUDA and CPU figures
    python benchmarks/bench_rotate.py --out /tmp/rot --quick      # smoke run at small sizes (a few seconds)

Writes ``bench_rotate.json`` into ``--out`` (created if missing) and prints one line per case.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.data import atomic_write_bytes  # noqa: E402
from sconv.functional import rotate as rotate_module  # noqa: E402
from sconv.functional import rotate_equirect, rotation_matrix, spherical_upsample  # noqa: E402


def time_ms(fn, device, reps, warmup):
    """Median milliseconds of ``fn()`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def cases(quick):
    """(name, callable factory(device) -> fn) for each case."""
    frame_hw = (96, 192) if quick else (960, 1920)
    batch = 2 if quick else 8
    unet_hw = (8, 16) if quick else (64, 128)

    def rotate_case(b, c, hw, mode, backward=False, batched_rotation=False, rotation_on_cpu=False, path=None):
        """``path``: None (``rotate_equirect``'s own choice), ``'pytorch'`` or ``'triton'`` (that path alone, no
        rotation check); the Triton cases run on CUDA only."""

        def make(device):
            gen = torch.Generator(device="cpu").manual_seed(0)
            x = torch.rand(b, c, *hw, generator=gen).to(device).requires_grad_(backward)
            if batched_rotation:
                r = rotation_matrix(torch.linspace(-180, 180, b), torch.linspace(-60, 60, b), 10.0)
            else:
                r = rotation_matrix(37.0, 58.0, -21.0)
            r = r.float() if rotation_on_cpu else r.float().to(device)
            if path == "pytorch":
                return lambda: rotate_module._rotate_pytorch(x, r, mode)
            if path == "triton":
                return None if device.type != "cuda" else lambda: rotate_module._rotate_triton(x, r, mode)
            if not backward:
                return lambda: rotate_equirect(x, r, mode)
            grad = torch.ones(b, c, *hw, device=device)
            return lambda: rotate_equirect(x, r, mode).backward(grad)

        return make

    def upsample_case(b, c, hw, spherical):
        def make(device):
            x = torch.rand(b, c, *hw, device=device, requires_grad=True)
            grad = torch.ones(b, c, 2 * hw[0], 2 * hw[1], device=device)
            if spherical:
                return lambda: spherical_upsample(x).backward(grad)
            return lambda: F.interpolate(x, scale_factor=2).backward(grad)

        return make

    h, w = frame_hw
    out = [
        (f"rotate bilinear 1x3x{h}x{w}", rotate_case(1, 3, frame_hw, "bilinear")),
        (
            f"rotate bilinear 1x3x{h}x{w}, rotation on the CPU",
            rotate_case(1, 3, frame_hw, "bilinear", rotation_on_cpu=True),
        ),
        (f"rotate bilinear 1x3x{h}x{w}, PyTorch path", rotate_case(1, 3, frame_hw, "bilinear", path="pytorch")),
        (f"rotate bilinear 1x3x{h}x{w}, Triton kernel", rotate_case(1, 3, frame_hw, "bilinear", path="triton")),
        (f"rotate nearest 1x3x{h}x{w}", rotate_case(1, 3, frame_hw, "nearest")),
        (f"rotate nearest 1x3x{h}x{w}, PyTorch path", rotate_case(1, 3, frame_hw, "nearest", path="pytorch")),
        (
            f"rotate bilinear {batch}x3x{h}x{w}, one rotation per item",
            rotate_case(batch, 3, frame_hw, "bilinear", batched_rotation=True),
        ),
        (f"rotate bilinear fwd+bwd 1x3x{h}x{w}", rotate_case(1, 3, frame_hw, "bilinear", backward=True)),
    ]
    uh, uw = unet_hw
    for c, scale in ((256, 8), (128, 4), (64, 2)):  # the U-Net decoder's three upsamplings, batch 8
        size = (uh // scale, uw // scale)
        for spherical in (True, False):
            label = "spherical_upsample bilinear" if spherical else "F.interpolate nearest"
            out.append((f"{label} fwd+bwd 8x{c}x{size[0]}x{size[1]}", upsample_case(8, c, size, spherical)))
    return out


def block_sweep(quick, device, reps):
    """The Triton kernel on the 1920 x 960 frame at each ``ROTATE_BLOCK`` (pixels per program): the launch rule's
    measurement."""
    hw = (96, 192) if quick else (960, 1920)
    x = torch.rand(1, 3, *hw, device=device)
    r = rotation_matrix(37.0, 58.0, -21.0).float()
    shipped, rows = rotate_module.ROTATE_BLOCK, []
    try:
        for block in (128, 256, 512, 1024):
            rotate_module.ROTATE_BLOCK = block
            median, best = time_ms(lambda: rotate_module._rotate_triton(x, r, "bilinear"), device, reps, 10)
            name = f"rotate kernel BLOCK={block} 1x3x{hw[0]}x{hw[1]}"
            rows.append(dict(case=name, device=device.type, median_ms=median, min_ms=best, reps=reps))
            print(f"{device.type:4s}  {name:60s}  median {median:9.3f} ms  (min {best:.3f})", flush=True)
    finally:
        rotate_module.ROTATE_BLOCK = shipped
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for bench_rotate.json (created if missing)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--reps", type=int, default=50, help="timed repetitions on CUDA (default 50)")
    parser.add_argument("--cpu-reps", type=int, default=5, help="timed repetitions on the CPU (default 5)")
    args = parser.parse_args()
    if args.reps < 1 or args.cpu_reps < 1:
        parser.error("--reps and --cpu-reps must be >= 1")

    devices = [torch.device("cuda")] if torch.cuda.is_available() else []
    devices.append(torch.device("cpu"))
    results = []
    for device in devices:
        reps, warmup = (args.reps, 10) if device.type == "cuda" else (args.cpu_reps, 1)
        for name, make in cases(args.quick):
            fn = make(device)
            if fn is None:
                continue
            median, best = time_ms(fn, device, reps, warmup)
            results.append(dict(case=name, device=device.type, median_ms=median, min_ms=best, reps=reps))
            print(f"{device.type:4s}  {name:60s}  median {median:9.3f} ms  (min {best:.3f})", flush=True)
        if device.type == "cuda":
            results += block_sweep(args.quick, device, reps)

    report = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        cpu=platform.processor() or platform.machine(),
        cpu_threads=torch.get_num_threads(),
        quick=args.quick,
        results=results,
    )
    atomic_write_bytes(os.path.join(args.out, "bench_rotate.json"), (json.dumps(report, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()

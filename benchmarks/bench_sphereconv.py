"""Benchmark: the SphereNet-style convolution (``sconv.functional.sphere_conv``) against a planar 3 x 3 ``nn.Conv2d``
with circular padding in longitude (the same taps, counted), on the Spherical U-Net's seven layer shapes, fwd+bwd
(input gradient included), in the same process; and the whole U-Net's training step with ``conv_type='sphereconv'``
against its planar twin (``conv_type='standard'``, circular padding).

Times: median over ``--reps`` repetitions after ``--warmup`` (``bench_sconv.Timer``: CUDA events on a GPU, perf_counter
on the CPU).

Usage (from the repository root):
    python benchmarks/bench_sphereconv.py --out /tmp/sc --size 32 64 --batch 32 --threads 1   # CPU
    python benchmarks/bench_sphereconv.py --out /tmp/sc --size 64 128 --batch 32                # GPU machine

Writes ``bench_sphereconv.json`` into ``--out`` (created if missing) and prints one line per case.
"""

import argparse
import datetime
import json
import os
import platform
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_sconv import Timer  # noqa: E402

from datasets.data import atomic_write_bytes  # noqa: E402
from models.baseline_unet import DECODER, ENCODER, SphericalUNet  # noqa: E402
from sconv.functional.sphereconv import sphere_conv  # noqa: E402


def layer_rows(height, width, batch, device, warmup, reps):
    rows, timer = [], Timer(device, warmup, reps)
    for name, c_in, c_out, _, _, scale in ENCODER + DECODER:
        h, w = height // scale, width // scale
        x = torch.randn(batch, c_in, h, w, device=device, requires_grad=True)
        weight = torch.randn(c_out, c_in, 3, 3, device=device, requires_grad=True)

        def ours(x=x, weight=weight):
            sphere_conv(x, weight).sum().backward()

        def planar(x=x, weight=weight):
            F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), weight).sum().backward()

        row = dict(name=f"{name} {h}x{w}", batch=batch, c_in=c_in, c_out=c_out)
        row["sphereconv_ms"] = timer(ours)[0]
        row["conv2d_ms"] = timer(planar)[0]
        row["ratio"] = row["sphereconv_ms"] / row["conv2d_ms"]
        print(f"{row['name']:<16} B={batch}: sphere_conv {row['sphereconv_ms']:8.2f} ms, conv2d 3x3 "
              f"{row['conv2d_ms']:8.2f} ms, ratio {row['ratio']:.2f}", flush=True)  # fmt: skip
        rows.append(row)
    return rows


def unet_row(height, width, batch, device, warmup, reps):
    frames = torch.randn(batch, 3, height, width, device=device)
    previous = torch.rand(batch, 1, height, width, device=device)
    row, timer = dict(name=f"U-Net {height}x{width}", batch=batch), Timer(device, warmup, reps)
    for key, kwargs in (("sphereconv_ms", dict(conv_type="sphereconv")),
                        ("planar_ms", dict(conv_type="standard", planar_padding="circular"))):  # fmt: skip
        model = SphericalUNet((height, width), **kwargs).to(device)
        row[key] = timer(lambda model=model: model(frames, previous).sum().backward())[0]
    row["ratio"] = row["sphereconv_ms"] / row["planar_ms"]
    print(f"{row['name']} B={batch} training step (fwd+bwd): sphereconv {row['sphereconv_ms']:.1f} ms, planar twin "
          f"{row['planar_ms']:.1f} ms, ratio {row['ratio']:.2f}", flush=True)  # fmt: skip
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for bench_sphereconv.json (created)")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 128], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    height, width = args.size
    if height % 8 or width % 8 or min(args.batch, args.reps) < 1 or args.warmup < 0:
        parser.error("--size must be divisible by 8, --batch and --reps >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    result = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        versions=dict(torch=torch.__version__, python=platform.python_version()),
        threads=torch.get_num_threads(),
        config=vars(args),
        layers=layer_rows(height, width, args.batch, device, args.warmup, args.reps),
        unet=unet_row(height, width, args.batch, device, args.warmup, args.reps),
    )
    os.makedirs(args.out, exist_ok=True)
    atomic_write_bytes(os.path.join(args.out, "bench_sphereconv.json"), json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()

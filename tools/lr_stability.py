"""How large a learning rate the U-Net's last layer tolerates: the curvature of the loss in conv7's weights.

The last convolution (conv7) has no BatchNorm after it, so the loss is a quadratic function of its weights; its
largest curvature ``lambda`` (top eigenvalue of the Hessian) bounds the stable learning rate: plain gradient descent
diverges above ``2 / lambda``, SGD with momentum ``m`` above ``2 (1 + m) / lambda`` (docs/training.md, "Learning
rate"). Optionally trains the whole network for a few steps at each learning rate on fixed batches, so the curve
can be set beside the bound.

    python tools/lr_stability.py OUTDIR [--size 64x128 --size 32x64] [--batch 32] [--steps 8 --lr 0.3 --lr 0.03]

Writes ``OUTDIR/lr_stability.json``; the synthetic set (8 videos x 60 frames, 64 x 128, ``ref.synthetic``) is made in
``OUTDIR/data`` unless ``--data-dir`` names a dataset. Runs on CPU or ``--device cuda``.
"""

import argparse
import json
import math
import os
import platform
import sys
import time

import torch
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ref  # noqa: E402
from datasets.data import VRVideo, atomic_write_bytes  # noqa: E402
from datasets.synthetic import ensure_synthetic  # noqa: E402
from models import SphericalUNet  # noqa: E402
from sconv.module.smse import SphereMSE  # noqa: E402


def last_layer_curvature(model, frames, previous_maps, targets, criterion, iterations=50, seed=0):
    """Top eigenvalue of the Hessian of ``criterion(model(frames, previous_maps), targets)`` in ``model.conv7``'s
    weight, the other weights fixed (power iteration on exact Hessian-vector products; the loss is quadratic in that
    weight, so the Hessian does not depend on where it is taken). BatchNorm layers should be in the mode the training
    uses (``model.train()``: batch statistics)."""
    features = []
    hook = model.conv7.register_forward_hook(lambda module, inputs, output: features.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            model(frames, previous_maps)
    finally:
        hook.remove()
    weight = model.conv7.weight.detach().clone().requires_grad_(True)
    loss = criterion(functional_call(model.conv7, {"weight": weight}, (features[0],)), targets)
    (gradient,) = torch.autograd.grad(loss, weight, create_graph=True)
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(weight.shape, generator=generator, dtype=weight.dtype).to(weight.device)
    vector /= vector.norm()
    value = 0.0
    for _ in range(iterations):
        (product,) = torch.autograd.grad(gradient, weight, vector, retain_graph=True)
        value = float((product * vector).sum())
        vector = product / product.norm()
    return value


def fixed_batches(dataset, batch, count, seed=0):
    """``count`` batches of ``batch`` items, epoch after epoch in a seeded order (a new one per epoch, the last
    incomplete batch of each dropped): the same for every run."""
    if len(dataset) < batch:
        raise ValueError(f"the dataset has {len(dataset)} items, fewer than one batch of {batch}")
    batches = []
    epoch = 0
    while len(batches) < count:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for start in range(0, len(order) - batch + 1, batch):
            if len(batches) < count:
                items = [dataset[i] for i in order[start : start + batch]]
                batches.append([torch.stack([item[k] for item in items]) for k in range(3)])
        epoch += 1
    return batches


def train_steps(size, batches, lr, device, seed):
    """The training step of train_unet.py (SGD, the original's momentum and weight decay, maps x target_scale) on
    the given batches; the loss before each step, stopping at the first non-finite one."""
    torch.manual_seed(seed)
    model = SphericalUNet(size).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=ref.momentum, weight_decay=ref.weight_decay)
    criterion = SphereMSE(*size).to(device)
    losses = []
    for frames, previous_maps, targets in batches:
        out = model(frames.to(device), previous_maps.to(device) * ref.target_scale)
        loss = criterion(out, targets.to(device) * ref.target_scale)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for lr_stability.json (and the synthetic set, data/)")
    parser.add_argument("--data-dir", default=None, help="dataset (default: a synthetic set in OUT/data)")
    parser.add_argument("--size", action="append", default=None, help="HxW, repeatable (default 64x128)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=0, help="training steps per learning rate (0: curvature only)")
    parser.add_argument("--lr", type=float, action="append", default=None, help="repeatable (default 0.3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=ref.seed)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (results depend on it only in rounding)")
    opt = parser.parse_args(argv)
    torch.set_num_threads(opt.threads)
    device = torch.device(opt.device)
    data_dir = opt.data_dir or os.path.join(opt.out, "data")
    if opt.data_dir is None:
        ensure_synthetic(data_dir, **ref.synthetic)
    index = os.path.join(data_dir, "index.json")
    results = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "momentum": ref.momentum,
        "batch": opt.batch,
        "sizes": {},
    }
    for text in opt.size or ["64x128"]:
        size = tuple(int(v) for v in text.lower().split("x"))
        dataset = VRVideo(
            data_dir,
            *size,
            None if os.path.isfile(index) else ref.video_train,
            index_file=(index if os.path.isfile(index) else None),
        )
        batches = fixed_batches(dataset, opt.batch, max(opt.steps, 1), opt.seed)
        torch.manual_seed(opt.seed)
        model = SphericalUNet(size).to(device).train()
        frames, previous_maps, targets = (t.to(device) for t in batches[0])
        curvature = last_layer_curvature(
            model, frames, previous_maps * ref.target_scale, targets * ref.target_scale, SphereMSE(*size).to(device)
        )
        entry = {
            "conv7_curvature": curvature,
            "max_stable_lr_gd": 2 / curvature,
            "max_stable_lr_momentum": 2 * (1 + ref.momentum) / curvature,
        }
        if opt.steps:
            entry["losses"] = {str(lr): train_steps(size, batches, lr, device, opt.seed) for lr in opt.lr or [0.3]}
        results["sizes"][text] = entry
        print(text, json.dumps(entry), flush=True)
    atomic_write_bytes(os.path.join(opt.out, "lr_stability.json"), json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()

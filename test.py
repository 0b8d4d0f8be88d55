"""A sample model that uses spherical convolution layers (as in the original repository).

A small network of spherical layers (crown convolutions, one strided, spherical pooling, sphere-weighted MSE) runs
forward and backward on a synthetic panorama; it prints the shapes, the loss and the time of each step.

    python test.py [--height 64] [--width 128] [--batch 2] [--steps 3] [--device cpu]
"""

import argparse
import math
import time

import torch
from torch import nn

from sconv.module import SphereMSE, SphericalConv, SphericalPooling


class SampleNet(nn.Module):
    """Crown convolutions at three scales (one strided, one followed by spherical pooling), upsampled back."""

    def __init__(self):
        super().__init__()
        self.conv1 = SphericalConv(3, 16, math.pi / 32, kernel_size=(4, 8), kernel_sr=None, bias=True)
        self.pool = SphericalPooling("max")
        self.conv2 = SphericalConv(16, 32, math.pi / 16, kernel_size=(4, 8), stride=2, bias=True)
        self.conv3 = SphericalConv(32, 1, math.pi / 4, kernel_size=(4, 8), bias=True)
        self.up = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)

    def forward(self, x):
        """Returns the map ``[B, 1, H, W]`` in (0, 1) and the shape after each layer."""
        shapes = [("input", tuple(x.shape))]
        x = torch.relu(self.conv1(x))
        shapes.append(("conv1", tuple(x.shape)))
        x = self.pool(x)
        shapes.append(("pool", tuple(x.shape)))
        x = torch.relu(self.conv2(x))
        shapes.append(("conv2", tuple(x.shape)))
        x = self.conv3(x)
        shapes.append(("conv3", tuple(x.shape)))
        out = torch.sigmoid(self.up(x))
        shapes.append(("output", tuple(out.shape)))
        return out, shapes


def synthetic_panorama(batch, height, width, generator):
    """A colourful random panorama and a target: a Gaussian blob on the sphere around a random point."""
    theta = (torch.arange(height) + 0.5) * math.pi / height
    phi = (torch.arange(width) + 0.5) * 2 * math.pi / width
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    images, targets = [], []
    for _ in range(batch):
        t0, p0 = torch.rand(2, generator=generator) * torch.tensor([math.pi, 2 * math.pi])
        cos_d = torch.cos(t) * torch.cos(t0) + torch.sin(t) * torch.sin(t0) * torch.cos(p - p0)
        target = torch.exp(-torch.arccos(cos_d.clamp(-1, 1)) ** 2 / (2 * 0.3**2))
        noise = torch.rand(3, height, width, generator=generator)
        images.append(0.5 * noise + 0.5 * target)
        targets.append(target[None])
    return torch.stack(images), torch.stack(targets)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.height % 4 or args.width % 4:
        parser.error(f"--height and --width must be multiples of 4, got {args.height}x{args.width}")

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = SampleNet().to(device)
    criterion = SphereMSE(args.height, args.width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, target = synthetic_panorama(args.batch, args.height, args.width, torch.Generator().manual_seed(0))
    x, target = x.to(device), target.to(device)
    print(f"sconv sample model on {device}, torch {torch.__version__}")
    for step in range(args.steps):
        start = time.perf_counter()
        out, shapes = model(x)
        loss = criterion(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if step == 0:
            for name, shape in shapes:
                print(f"  {name:>6}: {shape}")
        print(f"step {step}: loss {loss.item():.5f}, forward+backward {elapsed * 1e3:.1f} ms"
              + (" (first step builds the cached geometry)" if step == 0 else ""))
    if not torch.isfinite(loss):
        raise SystemExit("the loss is not finite")


if __name__ == "__main__":
    main()

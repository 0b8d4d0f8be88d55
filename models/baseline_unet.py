"""Spherical U-Net: the saliency network of the ECCV 2018 paper (frame + previous saliency map -> saliency map).

Architecture (``input_size = (H, W)``, H and W divisible by 8), each ``conv`` a ``SphericalConv(in, out, r, (kh, kw))``:

    [frame, previous map]  4 x H x W
    conv1   4 ->  64  r=pi/32 (8, 16)  BN ReLU  pool       -> r1 (H x W), then H/2
    conv2  64 -> 128  r=pi/16 (4, 8)   BN ReLU  pool       -> r2 (H/2),   then H/4
    conv3 128 -> 256  r=pi/4  (4, 8)   BN ReLU  pool       -> r3 (H/4),   then H/8
    conv4 256 -> 256  r=pi    (8, 16)  BN ReLU              (H/8: the bottleneck)
    up x2, [., r3]  conv5 512 -> 128  r=pi/4  (4, 8)  BN ReLU
    up x2, [., r2]  conv6 256 ->  64  r=pi/16 (4, 8)  BN ReLU
    up x2, [., r1]  conv7 128 ->   1  r=pi/32 (4, 8)           -> saliency logits 1 x H x W (no activation)

Ablations: ``use_sconv=False`` swaps every crown convolution for its planar twin (``planar_conv``: a k x k
``nn.Conv2d`` with zero padding and about as many taps as the crown); ``use_spooling=False`` swaps the spherical
pooling for ``nn.MaxPool2d(2)``.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sconv.functional.common import colatitudes, longitudes, pixel_solid_angle
from sconv.functional.crown import RIM_TOLERANCE, kernel_coordinates
from sconv.module.sconv import SphericalConv
from sconv.module.spool import SphericalPooling

__all__ = ["SphericalUNet", "crown_tap_count", "planar_kernel_size", "planar_conv"]

# (name, in_channels, out_channels, kernel_rad, kernel_size, grid scale: the layer runs at H / scale x W / scale)
ENCODER = (
    ("conv1", 4, 64, math.pi / 32, (8, 16), 1),
    ("conv2", 64, 128, math.pi / 16, (4, 8), 2),
    ("conv3", 128, 256, math.pi / 4, (4, 8), 4),
    ("conv4", 256, 256, math.pi, (8, 16), 8),
)
DECODER = (
    ("conv5", 256 + 256, 128, math.pi / 4, (4, 8), 4),
    ("conv6", 128 + 128, 64, math.pi / 16, (4, 8), 2),
    ("conv7", 64 + 64, 1, math.pi / 32, (4, 8), 1),
)


def crown_tap_count(height, width, kernel_rad):
    """Mean number of input pixel centres inside a crown of radius ``kernel_rad`` on an ``height x width`` grid.

    The crown of an output pixel p holds the input centres q with angular distance ``alpha(p, q) <= kernel_rad``
    (stride 1, so p runs over the same grid). The count depends only on p's row; rows are averaged with weights
    equal to their solid angle, i.e. the mean over the sphere.
    """
    theta = colatitudes(height)
    dphi = longitudes(width) - longitudes(width)[0]  # p in column 0; every column sees the same crown
    # One output row at a time: [H, W] temporaries, not [H, H, W].
    per_row = torch.stack(
        [(kernel_coordinates(t, theta[:, None], dphi[None, :])[0] <= kernel_rad + RIM_TOLERANCE).sum() for t in theta]
    ).double()
    area = pixel_solid_angle(height, width)
    return float((per_row * area).sum() / area.sum())


def planar_kernel_size(height, width, kernel_rad):
    """The odd ``k`` whose ``k * k`` taps are nearest ``crown_tap_count(height, width, kernel_rad)``."""
    taps = crown_tap_count(height, width, kernel_rad)
    k = max(1, int(math.sqrt(taps)))
    k -= 1 - k % 2  # largest odd k with k * k <= taps (at least 1)
    return k if taps - k * k <= (k + 2) ** 2 - taps else k + 2


def planar_conv(in_channels, out_channels, kernel_rad, grid_size, bias=False):
    """The planar twin of a crown convolution of radius ``kernel_rad`` on a ``grid_size = (H, W)`` input:
    ``nn.Conv2d`` with an odd ``k x k`` kernel of about as many taps, zero padding ``k // 2`` (same output size)."""
    k = planar_kernel_size(*grid_size, kernel_rad)
    return nn.Conv2d(in_channels, out_channels, k, padding=k // 2, bias=bias)


class SphericalUNet(nn.Module):
    """The paper's Spherical U-Net (see the module docstring for the layers).

    Args:
        input_size: ``(H, W)`` of the frames, each divisible by 8; sets the planar twins' kernel sizes (the
            spherical layers work at any size divisible by 8).
        use_sconv: crown convolutions (True) or their planar twins (False).
        use_spooling: spherical pooling (True) or ``nn.MaxPool2d(2)`` (False).

    Shape:
        ``forward(frame [B, 3, H, W], previous_map [B, 1, H, W]) -> [B, 1, H, W]`` saliency logits.
    """

    def __init__(self, input_size=(64, 128), use_sconv=True, use_spooling=True):
        super().__init__()
        height, width = input_size
        if height % 8 or width % 8 or height < 16 or width < 16:
            raise ValueError(f"input_size must be (H, W) with H, W >= 16 and divisible by 8, got {input_size}")
        self.input_size = (int(height), int(width))
        self.use_sconv = bool(use_sconv)
        self.use_spooling = bool(use_spooling)
        for name, c_in, c_out, kernel_rad, kernel_size, scale in ENCODER + DECODER:
            if self.use_sconv:
                conv = SphericalConv(c_in, c_out, kernel_rad=kernel_rad, kernel_size=kernel_size)
            else:
                conv = planar_conv(c_in, c_out, kernel_rad, (height // scale, width // scale))
            self.add_module(name, conv)
        for index, channels in zip((1, 2, 3, 4, 5, 6), (64, 128, 256, 256, 128, 64)):
            self.add_module(f"bn{index}", nn.BatchNorm2d(channels))
        self.pool = SphericalPooling("max") if self.use_spooling else nn.MaxPool2d(2)

    def encode(self, frame, previous_map):
        """Encoder: returns the skip activations ``(r1, r2, r3)`` and the bottleneck ``r4 [B, 256, H/8, W/8]``."""
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise ValueError(f"frame must have shape [B, 3, H, W], got {tuple(frame.shape)}")
        if previous_map.shape != (frame.shape[0], 1, *frame.shape[2:]):
            raise ValueError(
                f"previous_map must have shape [B, 1, H, W] = {[frame.shape[0], 1, *frame.shape[2:]]}, "
                f"got {list(previous_map.shape)}"
            )
        if frame.shape[2] % 8 or frame.shape[3] % 8:
            raise ValueError(f"frame's H and W must be divisible by 8 (three poolings), got {tuple(frame.shape[2:])}")
        r1 = F.relu(self.bn1(self.conv1(torch.cat([frame, previous_map], dim=1))))
        r2 = F.relu(self.bn2(self.conv2(self.pool(r1))))
        r3 = F.relu(self.bn3(self.conv3(self.pool(r2))))
        r4 = F.relu(self.bn4(self.conv4(self.pool(r3))))
        return (r1, r2, r3), r4

    def decode_features(self, skips, bottleneck):
        """The decoder up to ``r6 [B, 64, H/2, W/2]``: nearest x2 upsampling and concatenation with the skip of the
        same size."""
        r1, r2, r3 = skips
        r5 = F.relu(self.bn5(self.conv5(torch.cat([F.interpolate(bottleneck, scale_factor=2), r3], dim=1))))
        return F.relu(self.bn6(self.conv6(torch.cat([F.interpolate(r5, scale_factor=2), r2], dim=1))))

    def head(self, r6, r1):
        """The last decoder stage: ``r6`` upsampled, concatenated with ``r1``, to the logits ``[B, 1, H, W]``."""
        return self.conv7(torch.cat([F.interpolate(r6, scale_factor=2), r1], dim=1))

    def decode(self, skips, bottleneck):
        """Decoder: back to ``[B, 1, H, W]`` logits."""
        return self.head(self.decode_features(skips, bottleneck), skips[0])

    def forward(self, frame, previous_map):
        skips, bottleneck = self.encode(frame, previous_map)
        return self.decode(skips, bottleneck)

    def step(self, frame, previous_map, state=None):
        """One frame of a video, the interface the evaluation and the demo use: ``(logits [B, 1, H, W], None)``."""
        return self(frame, previous_map), None

    def extra_repr(self):
        return f"input_size={self.input_size}, use_sconv={self.use_sconv}, use_spooling={self.use_spooling}"

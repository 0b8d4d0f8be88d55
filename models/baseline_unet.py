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

Ablations: ``use_sconv=False`` (or ``conv_type='standard'``) swaps every crown convolution for its planar twin
(``planar_conv``: a k x k ``nn.Conv2d`` with about as many taps as the crown, zero padding or, with
``planar_padding='circular'``, circular in longitude); ``conv_type='sphereconv'`` for a 3 x 3 SphereNet-style
convolution (``sconv.module.SphereConv``, the original's ``--conv-type sphereconv``); ``use_spooling=False`` swaps the
spherical pooling for ``nn.MaxPool2d(2)``. Kernel options of the crown layers (``docs/latitude.md``):
``kernel_size`` gives every layer the same node grid, ``kernel_basis`` parametrises the nodes
(``SphericalConv(kernel_basis=...)``); the defaults are the paper's.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sconv.functional.common import colatitudes, longitudes, pixel_solid_angle
from sconv.functional.crown import RIM_TOLERANCE, kernel_coordinates
from sconv.module.sconv import KERNEL_BASES, SphericalConv
from sconv.module.sphereconv import SphereConv
from sconv.module.spool import SphericalPooling
from sconv.module.upsample import SphericalUpsample

__all__ = ["SphericalUNet", "crown_tap_count", "planar_kernel_size", "planar_conv", "CONV_TYPES"]

CONV_TYPES = ("sconv", "sphereconv", "standard")
PLANAR_PADDINGS = ("zeros", "circular")

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


class LongitudeCircularConv2d(nn.Conv2d):
    """``nn.Conv2d`` (odd square kernel, stride 1) padded circularly in longitude and with zeros in latitude."""

    def forward(self, input):
        half = self.kernel_size[1] // 2
        padded = F.pad(input, (half, half, 0, 0), mode="circular") if half else input
        return F.conv2d(padded, self.weight, self.bias, padding=(self.kernel_size[0] // 2, 0))


def planar_conv(in_channels, out_channels, kernel_rad, grid_size, bias=False, padding="zeros"):
    """The planar twin of a crown convolution of radius ``kernel_rad`` on a ``grid_size = (H, W)`` input:
    ``nn.Conv2d`` with an odd ``k x k`` kernel of about as many taps and the same output size; ``padding`` ``'zeros'``
    (all sides) or ``'circular'`` (circular in longitude, zeros in latitude)."""
    if padding not in PLANAR_PADDINGS:
        raise ValueError(f"padding must be one of {PLANAR_PADDINGS}, got {padding!r}")
    k = planar_kernel_size(*grid_size, kernel_rad)
    if padding == "circular":
        return LongitudeCircularConv2d(in_channels, out_channels, k, bias=bias)
    return nn.Conv2d(in_channels, out_channels, k, padding=k // 2, bias=bias)


class SphericalUNet(nn.Module):
    """The paper's Spherical U-Net (see the module docstring for the layers).

    Args:
        input_size: ``(H, W)`` of the frames, each divisible by 8; sets the planar twins' kernel sizes (the
            spherical layers work at any size divisible by 8).
        use_sconv: crown convolutions (True) or their planar twins (False); ``conv_type``, if given, overrides it.
        use_spooling: spherical pooling (True) or ``nn.MaxPool2d(2)`` (False).
        upsample: the decoder's x2 upsampling: ``'nearest'`` (the paper's) or ``'spherical'`` (bilinear on the
            sphere, :func:`sconv.functional.spherical_upsample`).
        conv_type: ``'sconv'`` (crown convolutions), ``'sphereconv'`` (3 x 3 ``SphereConv``) or ``'standard'``
            (planar twins); None: from ``use_sconv``.
        kernel_size: None (the paper's per-layer node grids) or ``(kh, kw)`` for every crown layer.
        kernel_basis: ``SphericalConv``'s ``kernel_basis`` for every crown layer (None: free nodes, the paper's).
        planar_padding: the planar twins' padding, ``'zeros'`` or ``'circular'`` (in longitude).
        antialias: with ``conv_type='sphereconv'``, ``SphereConv(antialias=True)`` in every layer (issue 22).
        symmetric: with ``conv_type='sphereconv'``, ``SphereConv(symmetric=True)`` (D4-symmetric kernels) in every
            layer (issue 22).
        frame_jitter: with ``conv_type='sphereconv'``, ``SphereConv(frame_jitter=...)`` in every layer: radians
            within which each layer's tap layout is turned per sample while training (issue 22); 0 (off) by default.

    Shape:
        ``forward(frame [B, 3, H, W], previous_map [B, 1, H, W]) -> [B, 1, H, W]`` saliency logits.
    """

    def __init__(
        self,
        input_size=(64, 128),
        use_sconv=True,
        use_spooling=True,
        conv_type=None,
        kernel_size=None,
        kernel_basis=None,
        planar_padding="zeros",
        upsample="nearest",
        antialias=False,
        symmetric=False,
        frame_jitter=0.0,
    ):
        super().__init__()
        height, width = input_size
        if height % 8 or width % 8 or height < 16 or width < 16:
            raise ValueError(f"input_size must be (H, W) with H, W >= 16 and divisible by 8, got {input_size}")
        self.input_size = (int(height), int(width))
        if conv_type is None:
            conv_type = "sconv" if use_sconv else "standard"
        if conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type must be one of {CONV_TYPES}, got {conv_type!r}")
        if kernel_basis not in KERNEL_BASES:
            raise ValueError(f"kernel_basis must be one of {KERNEL_BASES}, got {kernel_basis!r}")
        if planar_padding not in PLANAR_PADDINGS:
            raise ValueError(f"planar_padding must be one of {PLANAR_PADDINGS}, got {planar_padding!r}")
        self.conv_type = conv_type
        self.use_sconv = conv_type == "sconv"
        self.use_spooling = bool(use_spooling)
        if upsample not in ("nearest", "spherical"):
            raise ValueError(f"upsample must be 'nearest' or 'spherical', got {upsample!r}")
        self.upsample = SphericalUpsample("bilinear" if upsample == "spherical" else "nearest")
        self.kernel_size = None if kernel_size is None else tuple(int(k) for k in kernel_size)
        self.kernel_basis = kernel_basis
        self.planar_padding = planar_padding
        for option, value in (("antialias", antialias), ("symmetric", symmetric), ("frame_jitter", frame_jitter)):
            if value and conv_type != "sphereconv":
                raise ValueError(f"{option} applies to conv_type='sphereconv' only, got conv_type={conv_type!r}")
        self.antialias = bool(antialias)
        self.symmetric = bool(symmetric)
        self.frame_jitter = frame_jitter
        for name, c_in, c_out, kernel_rad, layer_nodes, scale in ENCODER + DECODER:
            grid = (height // scale, width // scale)
            if conv_type == "sconv":
                conv = SphericalConv(
                    c_in,
                    c_out,
                    kernel_rad=kernel_rad,
                    kernel_size=self.kernel_size or layer_nodes,
                    kernel_basis=kernel_basis,
                    grid_size=grid,
                )
            elif conv_type == "sphereconv":
                conv = SphereConv(
                    c_in, c_out, 3, antialias=self.antialias, symmetric=self.symmetric, frame_jitter=frame_jitter
                )
            else:
                conv = planar_conv(c_in, c_out, kernel_rad, grid, padding=planar_padding)
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
        """The decoder up to ``r6 [B, 64, H/2, W/2]``: x2 upsampling and concatenation with the skip of the same
        size."""
        r1, r2, r3 = skips
        r5 = F.relu(self.bn5(self.conv5(torch.cat([self.upsample(bottleneck), r3], dim=1))))
        return F.relu(self.bn6(self.conv6(torch.cat([self.upsample(r5), r2], dim=1))))

    def head(self, r6, r1):
        """The last decoder stage: ``r6`` upsampled, concatenated with ``r1``, to the logits ``[B, 1, H, W]``."""
        return self.conv7(torch.cat([self.upsample(r6), r1], dim=1))

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
        options = f"input_size={self.input_size}, conv_type={self.conv_type!r}, use_spooling={self.use_spooling}"
        if self.kernel_size is not None:
            options += f", kernel_size={self.kernel_size}"
        if self.kernel_basis is not None:
            options += f", kernel_basis={self.kernel_basis!r}"
        if self.antialias:
            options += ", antialias=True"
        if self.symmetric:
            options += ", symmetric=True"
        if self.frame_jitter:
            options += f", frame_jitter={self.frame_jitter:.4g}"
        if self.conv_type == "standard" and self.planar_padding != "zeros":
            options += f", planar_padding={self.planar_padding!r}"
        return options

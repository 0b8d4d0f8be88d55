"""``SphereConv``: the layer holding a SphereNet-style convolution's parameters (math in
``sconv.functional.sphereconv``)."""

import math
import numbers

import torch
from torch import nn

from sconv.functional.common import pair, positive_int
from sconv.functional.sphereconv import sphere_conv

__all__ = ["SphereConv", "FRAME_JITTER_STEPS"]

FRAME_JITTER_STEPS = 9  # turns drawn from 9 angles, so that their tap grids are computed once and cached


class SphereConv(nn.Module):
    """SphereNet-style convolution: a ``k x k`` kernel whose taps follow the tangent plane at each output pixel.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: odd int (the original supports only 3).
        stride: int or ``(s_h, s_w)`` dividing the input size.
        bias: add a learnable bias.
        antialias: low-pass each input row along longitude to the equator's angular resolution before sampling
            (``sconv.functional.sphereconv.longitude_prefilter``; issue 22). Off by default.
        symmetric: use the kernel averaged over the square's 8 turns and reflections (D4; for 3 x 3: centre, edge and
            corner values), so that the layer's response changes little when the pattern turns against local north,
            as it does across an object carried toward a pole (issue 22). Off by default.
        frame_jitter: in training mode, turn each sample's tap layout by an angle drawn uniformly from
            ``FRAME_JITTER_STEPS`` angles evenly spaced in ``[-frame_jitter, frame_jitter]`` radians (a new draw per
            sample and call, from torch's global generator; ``sconv.functional.sphereconv``'s ``turn``), so that the
            kernel learns to tolerate the turn of local north against an object near a pole (issue 22). In eval
            mode the taps are not turned. 0 (off) by default; at most pi / 2.

    Shape:
        input ``[B, in_channels, H, W]`` -> output ``[B, out_channels, H / s_h, W / s_w]``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        bias=False,
        antialias=False,
        symmetric=False,
        frame_jitter=0.0,
    ):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.stride = pair(stride, "stride")
        self.antialias = bool(antialias)
        self.symmetric = bool(symmetric)
        if isinstance(frame_jitter, bool) or not isinstance(frame_jitter, numbers.Real):
            raise TypeError(f"frame_jitter must be a number of radians in [0, pi/2], got {frame_jitter!r}")
        if not 0 <= frame_jitter <= math.pi / 2:
            raise ValueError(f"frame_jitter must be in [0, pi/2] radians, got {frame_jitter!r}")
        self.frame_jitter = float(frame_jitter)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(self.weight.new_empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv2d's default: uniform in +-1 / sqrt(fan_in)
        bound = 1 / math.sqrt(self.in_channels * self.kernel_size**2)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def kernel(self):
        """The kernel applied: ``weight``, or with ``symmetric`` its mean over the 8 symmetries of the square."""
        if not self.symmetric:
            return self.weight
        turns = [torch.rot90(self.weight, q, (2, 3)) for q in range(4)]
        return torch.stack(turns + [t.flip(3) for t in turns]).mean(0)

    def turns(self, batch):
        """The tap layout's turn for each of ``batch`` samples (``sphere_conv``'s ``turn``): 0 unless training with
        ``frame_jitter``."""
        if not (self.training and self.frame_jitter):
            return 0.0
        angles = torch.linspace(-self.frame_jitter, self.frame_jitter, FRAME_JITTER_STEPS, dtype=torch.float64)
        return angles[torch.randint(FRAME_JITTER_STEPS, (batch,))]

    def forward(self, input):
        turn = self.turns(len(input))
        return sphere_conv(input, self.kernel(), self.bias, self.stride, antialias=self.antialias, turn=turn)

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"bias={self.bias is not None}"
            + (", antialias=True" if self.antialias else "")
            + (", symmetric=True" if self.symmetric else "")
            + (f", frame_jitter={self.frame_jitter:.4g}" if self.frame_jitter else "")
        )

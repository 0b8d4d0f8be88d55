"""Spherical x2 upsampling layer."""

from torch import nn

from sconv.functional.common import choice
from sconv.functional.upsample import _MODES, spherical_upsample

__all__ = ["SphericalUpsample"]


class SphericalUpsample(nn.Module):
    """x2 upsampling on the sphere (see :func:`sconv.functional.upsample.spherical_upsample`).

    Args:
        mode: ``'bilinear'`` (across the seam and the poles) or ``'nearest'``.

    Shape:
        - Input: ``[B, C, H, W]``
        - Output: ``[B, C, 2H, 2W]``
    """

    def __init__(self, mode="bilinear"):
        super().__init__()
        self.mode = choice(mode, "mode", _MODES)

    def forward(self, input):
        return spherical_upsample(input, self.mode)

    def extra_repr(self):
        return f"mode={self.mode!r}"

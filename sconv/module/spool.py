"""Spherical pooling layer."""

from torch import nn

from sconv.functional.common import choice
from sconv.functional.spool import _MODES, spherical_pool

__all__ = ["SphericalPooling"]


class SphericalPooling(nn.Module):
    """2x pooling whose window widens toward the poles (see :func:`sconv.functional.spool.spherical_pool`).

    Args:
        mode: ``'max'`` or ``'avg'`` (mean weighted by ``sin(theta)`` of the input rows).

    Shape:
        - Input: ``[B, C, H, W]``, ``H`` and ``W`` even
        - Output: ``[B, C, H / 2, W / 2]``
    """

    def __init__(self, mode="max"):
        super().__init__()
        self.mode = choice(mode, "mode", _MODES)

    def forward(self, input):
        return spherical_pool(input, self.mode)

    def extra_repr(self):
        return f"mode={self.mode!r}"

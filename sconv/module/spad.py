"""Spherical padding layer."""

from torch import nn

from sconv.functional.spad import _pad_amounts, spherical_pad

__all__ = ["SphericalPad"]


class SphericalPad(nn.Module):
    """Pad a panorama with its neighbours on the sphere (see :func:`sconv.functional.spad.spherical_pad`).

    Args:
        pad: ``(left, right, top, bottom)``, or an int for all four. Left/right wrap around in longitude;
            top/bottom cross the pole (rolled by ``W / 2``, so ``W`` must be even).

    Shape:
        - Input: ``[B, C, H, W]``
        - Output: ``[B, C, H + top + bottom, W + left + right]``
    """

    def __init__(self, pad):
        super().__init__()
        self.pad = _pad_amounts(pad)

    def forward(self, input):
        return spherical_pad(input, self.pad)

    def extra_repr(self):
        return f"pad={self.pad}"

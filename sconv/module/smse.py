"""Spherical MSE loss."""

import numbers

from torch import nn

from sconv.functional.common import check_input
from sconv.functional.smse import sphere_mse

__all__ = ["SphereMSE"]


class SphereMSE(nn.Module):
    """Solid-angle weighted squared error for ``h x w`` panoramas (see :func:`sconv.functional.smse.sphere_mse`).

    ``loss = sum_{n,c,i,j} A_i (input - target)^2 / B``, ``A_i`` the exact solid angle of a pixel of row ``i``.
    An empty batch gives 0.

    Args:
        h, w: the panorama size the loss accepts; any other size is a ValueError.

    Shape:
        - Input, target: ``[B, C, h, w]``
        - Output: scalar
    """

    def __init__(self, h, w):
        super().__init__()
        for name, value in (("h", h), ("w", w)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 2:
                raise ValueError(f"{name} must be >= 2, got {value}")
        self.h, self.w = int(h), int(w)

    def forward(self, input, target):
        check_input(input, "input")
        if tuple(input.shape[-2:]) != (self.h, self.w):
            raise ValueError(
                f"input must have H x W = {self.h} x {self.w} (SphereMSE(h, w)), got {tuple(input.shape[-2:])}"
            )
        return sphere_mse(input, target)

    def extra_repr(self):
        return f"h={self.h}, w={self.w}"

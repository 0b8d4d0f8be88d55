"""Spherical padding: pad an equirectangular panorama with its own neighbours on the sphere.

Left/right padding wraps around in longitude; top/bottom padding continues across the pole, where the
row ``k`` below the pole is seen from the other side, i.e. rolled by half a turn (``W / 2`` columns).
"""

import numbers

import torch

from sconv.functional.common import check_input

__all__ = ["spherical_pad"]


def _pad_amounts(pad):
    """``pad`` as four non-negative ints ``(left, right, top, bottom)``; an int means all four."""
    if isinstance(pad, numbers.Integral) and not isinstance(pad, bool):
        pad = (int(pad),) * 4
    if (
        not isinstance(pad, (tuple, list))
        or len(pad) != 4
        or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pad)
    ):
        raise TypeError(f"pad must be an int or a sequence of 4 ints (left, right, top, bottom), got {pad!r}")
    if min(pad) < 0:
        raise ValueError(f"pad must be non-negative (left, right, top, bottom), got {tuple(pad)}")
    return tuple(int(p) for p in pad)


def spherical_pad(input, pad):
    """Pad ``input`` with the values that surround it on the sphere.

    Args:
        input: ``[B, C, H, W]`` equirectangular panorama.
        pad: ``(left, right, top, bottom)`` numbers of columns/rows to add (an int means all four).
            ``left, right <= W`` and ``top, bottom <= H``; ``W`` must be even when ``top`` or ``bottom`` > 0.

    Returns:
        ``[B, C, H + top + bottom, W + left + right]``. Padded row ``-1 - k`` (``k = 0`` nearest the image) is
        input row ``k`` rolled by ``W / 2`` columns, padded row ``H + k`` is input row ``H - 1 - k`` rolled
        likewise; padded columns wrap around (circular), corners included.
    """
    check_input(input)
    left, right, top, bottom = _pad_amounts(pad)
    h, w = input.shape[-2:]
    if left > w or right > w:
        raise ValueError(f"pad left and right must be <= W={w}, got pad={(left, right, top, bottom)}")
    if top > h or bottom > h:
        raise ValueError(f"pad top and bottom must be <= H={h}, got pad={(left, right, top, bottom)}")
    if (top or bottom) and w % 2:
        raise ValueError(
            f"pad top/bottom > 0 needs an even W (rows cross the pole by W/2 columns), got W={w}, "
            f"pad={(left, right, top, bottom)}"
        )
    out = input
    if top or bottom:
        # Crossing the pole reverses the row order and moves half a turn in longitude.
        above = input[..., :top, :].flip(-2).roll(w // 2, -1)
        below = input[..., h - bottom :, :].flip(-2).roll(w // 2, -1)
        out = torch.cat([above, out, below], dim=-2)
    if left or right:
        out = torch.cat([out[..., w - left :], out, out[..., :right]], dim=-1)
    return out

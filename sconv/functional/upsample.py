"""Spherical x2 upsampling of equirectangular panoramas.

Output pixel ``(i', j')`` of the ``2H x 2W`` grid sits at input pixel coordinates ``(i'/2 - 1/4, j'/2 - 1/4)``.
``'bilinear'`` interpolates on the sphere (:func:`sconv.functional.rotate.sample_plan`): across the seam, and across
the pole for the outermost output rows (whose upper neighbour is row 0 half a turn away), where planar
``F.interpolate(mode='bilinear')`` clamps to the edge. For even ``W`` that is padding by one pixel with
:func:`spherical_pad`, planar bilinear upsampling and cropping; for odd ``W`` (where the row across the pole falls
between columns) a cached gather plan. ``'nearest'`` copies the input pixel whose cell holds the
output pixel (each input pixel becomes a 2 x 2 block: on this grid, planar nearest is already spherical).
"""

import functools

import torch
import torch.nn.functional as F

from sconv.functional.common import check_input, choice, static_size
from sconv.functional.rotate import _MODES, apply_plan, sample_plan
from sconv.functional.spad import spherical_pad

__all__ = ["spherical_upsample"]


@functools.lru_cache(maxsize=32)
def _cached_upsample_plan(h, w, device):
    """Bilinear plan (float64 weights) for upsampling an ``h x w`` panorama to ``2h x 2w``, on ``device``."""
    row = torch.arange(2 * h, dtype=torch.float64) / 2 - 0.25
    col = torch.arange(2 * w, dtype=torch.float64) / 2 - 0.25
    index, weight = sample_plan(row[:, None].expand(-1, 2 * w).flatten(), col.repeat(2 * h), h, w)
    return index.to(device), weight.to(device)


@torch.compiler.assume_constant_result
def _upsample_plan(h, w, device):
    return _cached_upsample_plan(h, w, device)


def spherical_upsample(input, mode="bilinear"):
    """Upsample equirectangular panoramas x2 on the sphere.

    Args:
        input: ``[B, C, H, W]`` floating panoramas, ``H, W >= 1``.
        mode: ``'bilinear'`` (on the sphere: seam and poles) or ``'nearest'`` (2 x 2 blocks).

    Returns:
        ``[B, C, 2H, 2W]``. Bilinear keeps constants exactly and a map's integral over the sphere to interpolation
        accuracy.
    """
    check_input(input, min_size=1)
    choice(mode, "mode", _MODES)
    b, c, h, w = input.shape
    if mode == "nearest":
        return F.interpolate(input, scale_factor=2, mode="nearest")
    if w % 2 == 0 and h >= 2:  # spherical_pad needs H, W >= 2 and W even
        # Same rule, fast: pad one pixel on the sphere (the row across the pole is half a turn away, so W even),
        # planar bilinear x2 (align_corners=False puts output i' at input i'/2 - 1/4), drop the padding's 2 pixels.
        padded = F.interpolate(spherical_pad(input, 1), scale_factor=2, mode="bilinear", align_corners=False)
        return padded[..., 2:-2, 2:-2]
    index, weight = _upsample_plan(static_size(h), static_size(w), input.device)
    return apply_plan(input, index, weight).view(b, c, 2 * h, 2 * w)

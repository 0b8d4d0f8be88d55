"""Spherical mean squared error: squared error weighted by each pixel's solid angle."""

from sconv.functional.common import check_input, pixel_solid_angle

__all__ = ["sphere_mse"]


def sphere_mse(input, target):
    """Solid-angle weighted squared error, summed over pixels and channels, averaged over the batch.

    ``loss = sum_{n,c,i,j} A_i (input - target)^2 / B`` with ``A_i`` the exact solid angle of a pixel of row ``i``
    (:func:`sconv.functional.common.pixel_solid_angle`; all pixels together cover ``4 pi``).

    Args:
        input: ``[B, C, H, W]`` prediction.
        target: ``[B, C, H, W]`` target, same shape.

    Returns:
        A scalar tensor. An empty batch (``B = 0``) gives a loss of 0, not NaN.
    """
    check_input(input, "input")
    check_input(target, "target")
    if target.shape != input.shape:
        raise ValueError(f"target must have the shape of input {tuple(input.shape)}, got {tuple(target.shape)}")
    b, _, h, w = input.shape
    squared_error = (input - target).square().sum(dim=(0, 1, 3))  # [H]
    area = pixel_solid_angle(h, w, dtype=squared_error.dtype, device=input.device)
    return (squared_error * area).sum() / max(b, 1)

"""Rotation of equirectangular panoramas and of gaze points on the sphere.

Frame (the original SphericalDNNs' ``utils/equirect_rotate.py``): the direction of a point at colatitude ``theta``
and longitude ``phi`` of our grid (``docs/spec.md``) has latitude ``lat = pi/2 - theta`` and longitude
``lon = phi - pi`` (``lon = 0`` is the centre column of the panorama), and unit vector

    v = (cos(lat) cos(lon), cos(lat) sin(lon), sin(lat)) = (-sin(theta) cos(phi), -sin(theta) sin(phi), cos(theta))

so ``x`` points at the centre of the panorama, ``y`` a quarter turn to its right (``phi = 3 pi / 2``), ``z`` at the
north pole (row 0). Rotating a panorama by ``R`` moves the content at direction ``q`` to ``R q``:
``out(p) = in(R^T p)``, as the original's ``Equirect_Rotate(img, rot_x, rot_y, rot_z)`` (``isInverse=False``).

Sampling (see :func:`sample_plan`): bilinear on the sphere. Columns wrap around (no seam); a row index above
row 0 or below row ``H - 1`` crosses the pole, where row ``-1 - k`` is row ``k`` half a turn away in longitude
(the rule of :func:`sconv.functional.spad.spherical_pad`), interpolated in longitude like any row, so any ``W``
(odd too) works. For even ``W`` bilinear runs as one ``grid_sample`` on the panorama padded by one pixel with
``spherical_pad``; otherwise (odd ``W``, ``'nearest'``) as a gather plan. On CUDA, where no gradient is needed,
one Triton kernel (``sconv/functional/kernels/rotate.py``) does it all in a single pass: :func:`_rotate_triton`.
"""

import functools
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from sconv.functional.common import check_input, choice, colatitudes, longitudes, static_size
from sconv.functional.conv_layout import triton, triton_available
from sconv.functional.spad import spherical_pad

if triton is not None:
    from sconv.functional.kernels.rotate import rotate_equirect_kernel

__all__ = [
    "rotate_equirect",
    "rotate_points",
    "rotation_matrix",
    "sample_plan",
    "apply_plan",
    "directions",
    "angles_of",
]

_MODES = ("bilinear", "nearest")


def directions(theta, phi):
    """Unit vectors ``[..., 3]`` of colatitudes ``theta`` and longitudes ``phi`` (broadcast) in the rotation frame."""
    sin_theta = torch.sin(theta)
    return torch.stack(
        torch.broadcast_tensors(-sin_theta * torch.cos(phi), -sin_theta * torch.sin(phi), torch.cos(theta)), dim=-1
    )


def angles_of(v):
    """``(theta, phi)`` of directions ``v [..., 3]`` (need not be unit length): ``theta`` in ``[0, pi]``,
    ``phi`` in ``[0, 2 pi)``. atan2 for both keeps full precision at the poles (acos does not)."""
    x, y, z = v.unbind(-1)
    theta = torch.atan2(torch.hypot(x, y), z)
    phi = torch.atan2(-y, -x)  # in [-pi, pi]
    phi = torch.where(phi < 0, phi + 2 * math.pi, phi)
    return theta, torch.where(phi >= 2 * math.pi, phi - 2 * math.pi, phi)


def _angle_tensor(value, name, dtype, device):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = torch.tensor(float(value), dtype=dtype, device=device)
    elif not (
        isinstance(value, torch.Tensor) and value.dim() <= 1 and not value.is_complex() and value.dtype != torch.bool
    ):
        raise TypeError(f"{name} must be a real number or a 0-D/1-D tensor of angles, got {value!r}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite, got {value}")
    return value.to(dtype=dtype, device=device)


def rotation_matrix(yaw=0.0, pitch=0.0, roll=0.0, degrees=True, dtype=torch.float64, device=None):
    """Rotation ``Rx(roll) Ry(pitch) Rz(yaw)``: the original's ``getRotMatrix(rot_x=roll, rot_y=pitch, rot_z=yaw)``.

    Applied to a panorama (:func:`rotate_equirect`), ``yaw`` alone moves the content to the right by ``yaw``
    (``Rz``, about the polar axis: a shift of ``W yaw / 360`` columns), ``pitch`` alone moves the centre of the
    panorama down by ``pitch`` (``Ry``, about the axis through ``phi = 3 pi / 2``), ``roll`` alone turns the view
    about its centre (``Rx``); together: yaw first, then pitch, then roll. The original's
    ``--rot_z`` is ``yaw`` and ``--rot_y`` is ``pitch``, in degrees (its ``rot_x`` was always 0).

    Args:
        yaw, pitch, roll: numbers, or 1-D tensors of one length ``B`` (or numbers mixed with them).
        degrees: angles in degrees (True, the original's unit) or radians.

    Returns:
        ``[3, 3]``, or ``[B, 3, 3]`` when an angle is a 1-D tensor.
    """
    angles = [_angle_tensor(a, n, torch.float64, device) for a, n in ((yaw, "yaw"), (pitch, "pitch"), (roll, "roll"))]
    try:
        yaw, pitch, roll = torch.broadcast_tensors(*angles)
    except RuntimeError:
        shapes = [tuple(a.shape) for a in angles]
        raise ValueError(f"yaw, pitch, roll must broadcast to one length, got shapes {shapes}") from None
    if degrees:
        yaw, pitch, roll = torch.deg2rad(yaw), torch.deg2rad(pitch), torch.deg2rad(roll)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def axis_rotation(angle, i, j):
        # Rotation by angle in the (i, j) coordinate plane: e_i -> cos e_i + sin e_j.
        c, s = torch.cos(angle), torch.sin(angle)
        rows = [[one, zero, zero], [zero, one, zero], [zero, zero, one]]
        rows[i][i], rows[i][j], rows[j][i], rows[j][j] = c, -s, s, c
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    # Rx(a) = rotation x: (y, z) plane; Ry(a) = (z, x) plane; Rz(a) = (x, y) plane.
    matrix = axis_rotation(roll, 1, 2) @ axis_rotation(pitch, 2, 0) @ axis_rotation(yaw, 0, 1)
    return matrix.to(dtype)


def _check_rotation(rotation, batch=None):
    """``rotation`` as a ``[3, 3]`` or ``[B, 3, 3]`` float tensor; a proper rotation within float tolerance."""
    if not isinstance(rotation, torch.Tensor):
        raise TypeError(f"rotation must be a torch.Tensor [3, 3] or [B, 3, 3], got {type(rotation).__name__}")
    if rotation.shape[-2:] != (3, 3) or rotation.dim() not in (2, 3):
        raise ValueError(f"rotation must have shape [3, 3] or [B, 3, 3], got {tuple(rotation.shape)}")
    if batch is not None and rotation.dim() == 3 and rotation.shape[0] != batch:
        raise ValueError(f"rotation [B, 3, 3] must have B = the input's batch size {batch}, got {rotation.shape[0]}")
    if not rotation.is_floating_point():
        raise TypeError(f"rotation must be a floating-point tensor, got {rotation.dtype}")
    if torch.compiler.is_compiling():
        return  # the value check needs the values on the host: skipped inside torch.compile graphs
    r = rotation.detach().double()
    eye = torch.eye(3, dtype=torch.float64, device=r.device)
    error = torch.cat([(r @ r.transpose(-1, -2) - eye).abs().flatten(), (torch.linalg.det(r) - 1).abs().flatten()])
    tol = 1e-9 if rotation.dtype == torch.float64 else 1e-4
    if not bool((error <= tol).all()):  # also catches NaN
        raise ValueError(
            f"rotation must be a rotation matrix (R R^T = I, det R = 1 within {tol:g}), "
            f"got an error of {float(error.nan_to_num(math.inf).max()):.3g}"
        )


def _geometry_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def sample_plan(row, col, h, w, mode="bilinear"):
    """Where and with what weights to read an ``h x w`` panorama to sample it at continuous pixel coordinates.

    ``row``, ``col`` (``[N]``, or ``[B, N]`` for one set per batch item): row ``r`` is colatitude
    ``(r + 1/2) pi / h``, column ``c`` longitude ``(c + 1/2) 2 pi / w``, so ``row`` in ``[-1/2, h - 1/2]`` covers the
    sphere; ``col`` is taken mod ``w``.

    ``'bilinear'``: linear in longitude within each of the two rows ``floor(row)``, ``floor(row) + 1``, then linear
    between them; row ``-1`` is row 0 and row ``h`` is row ``h - 1``, half a turn (``w / 2`` columns) away.
    ``'nearest'``: the pixel whose cell holds the point.

    Returns ``(index, weight)``: flat pixel indices ``[..., 4, N]`` and their weights (the dtype of ``row``), or
    ``index [..., N]`` and ``None`` for ``'nearest'``.
    """
    choice(mode, "mode", _MODES)
    if mode == "nearest":
        cell_row = torch.floor(row + 0.5).long().clamp_(0, h - 1)
        return cell_row * w + torch.remainder(torch.floor(col + 0.5).long(), w), None
    top = torch.floor(row)
    row_frac = row - top
    top = top.long()
    indices, weights = [], []
    for r, row_weight in ((top, 1 - row_frac), (top + 1, row_frac)):
        above, below = r < 0, r >= h
        # Across a pole: padded row -1 - k is row k, padded row h + k is row h - 1 - k, half a turn away.
        in_row = torch.where(above, -1 - r, torch.where(below, 2 * h - 1 - r, r))
        shifted = torch.where(above | below, col + w / 2, col)
        left = torch.floor(shifted)
        frac = shifted - left
        left = torch.remainder(left.long(), w)
        indices += [in_row * w + left, in_row * w + torch.remainder(left + 1, w)]
        weights += [row_weight * (1 - frac), row_weight * frac]
    return torch.stack(indices, dim=-2), torch.stack(weights, dim=-2)


def apply_plan(input, index, weight):
    """Sample ``input [B, C, H, W]`` by a :func:`sample_plan`; returns ``[B, C, N]``."""
    b, c, h, w = input.shape
    flat = input.reshape(b, c, h * w)
    shared = index.dim() == (1 if weight is None else 2)  # one plan for the whole batch
    # gather, not index_select: on the CPU index_select along the last dimension is ~20x slower.
    flat_index = index.flatten()[None, None, :] if shared else index.flatten(1)[:, None, :]
    point_shape = index.shape[-1:] if weight is None else index.shape[-2:]  # [N] or [4, N]
    values = flat.gather(2, flat_index.expand(b, c, -1)).view(b, c, *point_shape)
    if weight is None:
        return values
    if not shared:
        weight = weight[:, None]
    return (values * weight.to(input.dtype)).sum(dim=-2)


def rotate_equirect(input, rotation, mode="bilinear"):
    """Rotate equirectangular panoramas on the sphere: ``out(p) = in(R^T p)``.

    Args:
        input: ``[B, C, H, W]`` floating panoramas, any ``H, W >= 1``.
        rotation: ``[3, 3]`` (all items) or ``[B, 3, 3]`` (one per item) rotation matrix in the frame of the module
            docstring (x: centre of the panorama, z: north pole), e.g. from :func:`rotation_matrix`. It is checked
            to be a rotation (on its own device: a CPU rotation for a CUDA input costs no device sync) and moved to
            the input's device.
        mode: ``'bilinear'`` (on the sphere: seam and poles included; differentiable in ``input``) or
            ``'nearest'`` (the pixel whose cell holds the point; the original's was its cell's corner).

    Returns:
        ``[B, C, H, W]``: pixel ``p`` (its centre's direction) takes the input at direction ``R^T p``.
    """
    check_input(input, min_size=1)
    choice(mode, "mode", _MODES)
    _check_rotation(rotation, input.shape[0])
    if _triton_path(input):
        return _rotate_triton(input, rotation, mode)
    return _rotate_pytorch(input, rotation, mode)


def _rotate_pytorch(input, rotation, mode):
    """:func:`rotate_equirect` in PyTorch ops (any device and dtype; differentiable in ``input``)."""
    b, c, h, w = input.shape
    dtype = _geometry_dtype(input.dtype)
    # R^T p for every output direction p (rows of the cached [H W, 3] table): p^T R.
    pixel_dirs = _pixel_directions(static_size(h), static_size(w), dtype, input.device)
    source_theta, source_phi = angles_of(pixel_dirs @ rotation.to(device=input.device, dtype=dtype))
    row = source_theta * (h / math.pi) - 0.5
    col = source_phi * (w / (2 * math.pi)) - 0.5
    if mode == "bilinear" and w % 2 == 0 and h >= 2:  # spherical_pad needs H, W >= 2 and W even
        return _grid_sample_on_sphere(input, row.view(-1, h, w), col.view(-1, h, w))
    return apply_plan(input, *sample_plan(row, col, h, w, mode)).view(b, c, h, w)


@functools.lru_cache(maxsize=16)
def _cached_pixel_directions(h, w, dtype, device):
    theta = colatitudes(h, dtype=torch.float64, device=device)
    phi = longitudes(w, dtype=torch.float64, device=device)
    return directions(theta[:, None], phi[None, :]).reshape(h * w, 3).to(dtype)


@torch.compiler.assume_constant_result
def _pixel_directions(h, w, dtype, device):
    """Directions of the ``h x w`` pixel centres, ``[h w, 3]`` (computed once per size, dtype and device)."""
    return _cached_pixel_directions(h, w, dtype, device)


def _grid_sample_on_sphere(input, row, col):
    """The bilinear rule of :func:`sample_plan` for even ``W`` as one ``grid_sample`` call on the panorama padded by
    one pixel on the sphere (:func:`spherical_pad`: the pole rows are the rows across the pole, half a turn away).

    ``row``, ``col``: ``[1 or B, H', W']`` continuous pixel coordinates; returns ``[B, C, H', W']``.
    """
    b, _, h, w = input.shape
    compute = input if input.dtype in (torch.float32, torch.float64) else input.float()  # coordinates need float32
    padded = spherical_pad(compute, 1)
    col = torch.remainder(col + 0.5, w) - 0.5  # in [-1/2, W - 1/2): inside the padded columns 0 .. W + 1
    # align_corners=True: -1 and 1 are the centres of the first and last padded pixels.
    grid = torch.stack([(col + 1) * (2 / (w + 1)) - 1, (row + 1) * (2 / (h + 1)) - 1], dim=-1).to(compute.dtype)
    out = F.grid_sample(padded, grid.expand(b, -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(input.dtype)


def _triton_path(input):
    """The single-pass Triton kernel serves CUDA float32/16-bit inputs that need no gradient (it has no backward:
    training through a rotation takes the PyTorch path), outside ``torch.compile`` graphs."""
    needs_grad = torch.is_grad_enabled() and input.requires_grad
    return triton_available(input.device, input.dtype) and not needs_grad and not torch.compiler.is_compiling()


# Launch rule: 256 output pixels per program, every channel of one batch item: the fastest of 128-1024 on an H100
# (bench_rotate.py's block sweep, benchmarks/results_h100_rotate.json).
ROTATE_BLOCK = 256


@functools.lru_cache(maxsize=1)
def atan_coefficients():
    """``(c3, c5, c7, c9, c11)`` with ``atan(u) ~ u + c3 u^3 + ... + c11 u^11`` on ``|u| <= tan(pi / 8)``: a float64
    least-squares fit on Chebyshev nodes (max error 1.7e-10, far below float32's resolution)."""
    k = np.arange(2000)
    u = math.tan(math.pi / 8) * np.cos(np.pi * (k + 0.5) / k.size)
    powers = np.stack([u**p for p in (3, 5, 7, 9, 11)], axis=1)
    return tuple(float(c) for c in np.linalg.lstsq(powers, np.arctan(u) - u, rcond=None)[0])


def _rotate_triton(input, rotation, mode):
    """:func:`rotate_equirect` as one Triton kernel: direction, rotation, angles and sampling per output pixel, in
    float32. No autograd."""
    b, c, h, w = input.shape
    x = input.contiguous()
    out = torch.empty_like(x)
    rot = rotation.to(device=x.device, dtype=torch.float32).contiguous()
    grid = (triton.cdiv(h * w, ROTATE_BLOCK), b)
    rotate_equirect_kernel[grid](
        x, out, rot, 9 if rot.dim() == 3 else 0, c, h, w, *atan_coefficients(),
        BLOCK=ROTATE_BLOCK, NEAREST=mode == "nearest",
    )  # fmt: skip
    return out


def rotate_points(points, rotation):
    """Rotate gaze points exactly: the point at direction ``q`` goes to ``R q``, as in :func:`rotate_equirect`.

    Args:
        points: ``[N, 2]`` (or ``[B, N, 2]`` with a ``[B, 3, 3]`` rotation) of ``(x, y)`` in ``[0, 1]``: ``x`` the
            longitude fraction ``phi / (2 pi)``, ``y`` the colatitude fraction ``theta / pi`` (the convention of
            ``datasets/data.py``). A tensor, or anything ``torch.as_tensor`` takes (computed in float64 then).
        rotation: ``[3, 3]`` or ``[B, 3, 3]``.

    Returns:
        Rotated points, the shape of ``points``, ``x`` in ``[0, 1)`` and ``y`` in ``[0, 1]``; the dtype of a
        floating tensor ``points``, else float64.
    """
    if not isinstance(points, torch.Tensor) or not points.is_floating_point():
        try:
            points = torch.as_tensor(points, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"points must be a [N, 2] tensor or array of (x, y) pairs: {err}") from None
    if points.dim() not in (2, 3) or points.shape[-1] != 2:
        raise ValueError(f"points must have shape [N, 2] or [B, N, 2] of (x, y), got {tuple(points.shape)}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points must be finite")
    _check_rotation(rotation, points.shape[0] if points.dim() == 3 else None)
    if rotation.dim() == 3 and points.dim() == 2:
        raise ValueError("a [B, 3, 3] rotation needs points of shape [B, N, 2]")
    r = rotation.to(device=points.device, dtype=torch.float64)
    p = points.double()
    v = directions(p[..., 1] * math.pi, p[..., 0] * (2 * math.pi))
    theta, phi = angles_of(v @ r.transpose(-1, -2))  # R q for each row q
    x = phi / (2 * math.pi)
    x = torch.where(x >= 1, x - 1, x)  # phi just below 2 pi can round to 1
    return torch.stack([x, (theta / math.pi).clamp(0, 1)], dim=-1).to(points.dtype)

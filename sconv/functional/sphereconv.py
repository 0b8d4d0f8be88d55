"""SphereNet-style convolution (Coors et al., ECCV 2018; the original repo's ``--conv-type sphereconv``).

Each output pixel p at (latitude phi_0, longitude lambda_0) reads its ``k x k`` kernel taps not from the pixel grid
but from the points of the sphere that the gnomonic (tangent-plane) projection at p maps to a regular grid:

    x_a = tan(a dlambda),  y_ab = tan(b dphi) / cos(a dlambda),  a, b in -(k // 2) .. k // 2

(``dlambda = 2 pi / W``, ``dphi = pi / H``; x east, y north), taken back to the sphere by the inverse gnomonic
projection and sampled bilinearly (wrapping in longitude; within half a pixel of a pole, the pole row's value). The
sampled taps are laid out tap-major as ``C k^2`` channels of ``H' x W'`` and one 1x1 ``conv2d`` (a GEMM) applies the
kernel. At the equator of a fine grid the taps are the pixel neighbours: the operator is the planar ``k x k``
cross-correlation.

What differs from the original's ``models/SphereConv.py``: the longitude offset uses ``atan2`` (the original's
``arctan`` folds points past 90 degrees of longitude from p, which happens next to the poles), pixel centres follow
``sconv``'s grid (row ``i`` at colatitude ``(i + 1/2) pi / H``), odd kernel sizes other than 3 work, and the centre
tap is computed like the others (the original overwrites it with p's own pixel: the same point).

``antialias=True`` (off by default; issue 22) first low-passes every input row along longitude: row ``i`` at latitude
``phi_i`` is replaced by the area average, over a window of ``1 / cos(phi_i)`` pixels (at most ``W``) centred on each
pixel, of the row's piecewise-constant reconstruction (``longitude_prefilter``). That window is one equatorial pixel
of arc along the parallel, so every row carries about the equator's angular resolution in longitude before the
taps sample it; at the equator the window is one pixel and the row is unchanged.

``turn`` (0 by default; issue 22) turns the tap layout in the tangent plane by an angle, counter-clockwise from east
toward north, before the inverse projection: ``(x, y) -> (x cos t - y sin t, x sin t + y cos t)``. A turn of pi
reads the taps of the kernel flipped in both directions. ``SphereConv(frame_jitter=...)`` draws a turn per sample
while training, so that the kernels learn to tolerate the turn of local north against an object near a pole.
"""

import functools
import math
import numbers

import torch
import torch.nn.functional as F

from sconv.functional.common import check_input, check_parameter, colatitudes, longitudes, pair

__all__ = [
    "longitude_prefilter",
    "longitude_prefilter_widths",
    "check_turn",
    "sphere_conv",
    "sphere_sampling_points",
    "sphere_sampling_grid",
]


def sphere_sampling_points(height, width, stride, kernel_size, turn=0.0):
    """The kernel taps on the sphere as fractional pixel coordinates (float64), the tap layout turned by ``turn``
    radians in the tangent plane (see the module docstring).

    Returns ``(row, col)``, each ``[H', k, W', k]`` (output row, tap row b from north to south, output column, tap
    column a from west to east): ``row`` in ``[-1/2, H - 1/2]``, ``col`` in ``[0, W)``.
    """
    s_h, s_w = stride
    half = kernel_size // 2
    colat = colatitudes(height)[(s_h - 1) // 2 :: s_h]  # output pixel i sits on input row s_h i + (s_h - 1) // 2
    lon = longitudes(width)[(s_w - 1) // 2 :: s_w]
    lat0 = (math.pi / 2 - colat)[:, None, None, None]
    lon0 = lon[None, None, :, None]
    steps = torch.arange(-half, half + 1, dtype=torch.float64)
    a = steps[None, None, None, :]  # east
    b = -steps[None, :, None, None]  # north: tap row 0 is the northernmost
    d_lon, d_lat = 2 * math.pi / width, math.pi / height
    x = torch.tan(a * d_lon)
    y = torch.tan(b * d_lat) / torch.cos(a * d_lon)
    if turn:
        x, y = x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn)
    rho = torch.hypot(x, y)
    c = torch.atan(rho)
    safe = torch.where(rho > 0, rho, torch.ones_like(rho))
    sin_lat = torch.cos(c) * torch.sin(lat0) + torch.where(rho > 0, y * torch.sin(c) / safe, 0) * torch.cos(lat0)
    lat = torch.asin(sin_lat.clamp(-1, 1))
    d = torch.atan2(x * torch.sin(c), rho * torch.cos(lat0) * torch.cos(c) - y * torch.sin(lat0) * torch.sin(c))
    lon_q = lon0 + torch.where(rho > 0, d, torch.zeros_like(d))
    row = (math.pi / 2 - lat) * height / math.pi - 0.5
    col = torch.remainder(lon_q * width / (2 * math.pi) - 0.5, width)
    shape = (len(colat), kernel_size, len(lon), kernel_size)
    return row.expand(shape), col.expand(shape)


def tap_grid(row, col, height, width):
    """Tap coordinates ``row``, ``col`` ``[H', k, W', k]`` (fractional pixels of an ``H x W`` input, laid out as
    ``sphere_sampling_points``) as a ``grid_sample`` grid ``[1, k^2 H', W', 2]`` (``align_corners=False``) into the
    input with one column of circular padding on each side (``convolve_taps``): row ``(b k + a) H' + i``, column
    ``j`` holds tap ``(b, a)`` of output pixel ``(i, j)``."""
    out_h, k, out_w = row.shape[:3]
    row, col = (t.permute(1, 3, 0, 2).reshape(k * k * out_h, out_w) for t in (row, col))  # tap-major
    x = (col + 1.5) * (2 / (width + 2)) - 1  # padded column col + 1
    y = (row + 0.5) * (2 / height) - 1  # border padding clamps to the pole rows
    return torch.stack([x, y], dim=-1)[None]


@functools.lru_cache(maxsize=256)
def sphere_sampling_grid(height, width, stride, kernel_size, device, dtype, turn=0.0):
    """``sphere_sampling_points`` as a ``tap_grid``, on ``device`` in ``dtype``; cached."""
    row, col = sphere_sampling_points(height, width, stride, kernel_size, turn)
    return tap_grid(row, col, height, width).to(device=device, dtype=dtype)


def convolve_taps(input, grid, weight, bias=None, antialias=False):
    """``input [B, C, H, W]`` sampled bilinearly at the taps of ``grid`` (``tap_grid``, one for every sample or one
    per sample; with ``antialias``, after ``longitude_prefilter``) into ``[B, C, k^2 H', W']``, viewed as ``C k^2``
    channels (c, b, a) of ``H' x W'`` and mixed by ``weight [O, C, k, k]`` as a 1x1 convolution: ``[B, O, H', W']``
    (one GEMM: on the CPU faster than a stride-k convolution of a ``[k H', k W']`` image of taps). Where the layer has
    fewer output than input channels (per output pixel), the input is mixed into ``O k^2`` channels first and those
    are sampled, the same sum in another order."""
    if antialias:
        input = longitude_prefilter(input)
    batch, channels, height, width = input.shape
    out_channels, taps = weight.shape[0], weight.shape[-1] ** 2
    out_h, out_w = grid.shape[1] // taps, grid.shape[2]
    if out_channels * (height // out_h) * (width // out_w) < channels:
        # Fewer channels out than in: mix first (sampling is linear and per channel, so it commutes with the 1x1
        # mixing), then sample each tap's O channels at that tap's points: O k^2 channels sampled instead of C k^2.
        mixing = weight.permute(2, 3, 0, 1).reshape(taps * out_channels, channels, 1, 1)  # (b, a, o)
        mixed = F.pad(F.conv2d(input, mixing), (1, 1, 0, 0), mode="circular")
        grids = grid.expand(batch, -1, -1, -1).reshape(batch * taps, out_h, out_w, 2)
        per_tap = mixed.view(batch * taps, out_channels, height, width + 2)
        sampled = F.grid_sample(per_tap, grids, "bilinear", "border", align_corners=False)
        out = sampled.view(batch, taps, out_channels, out_h, out_w).sum(1)
        out = out if bias is None else out + bias.view(-1, 1, 1)
        return out.to(mixed.dtype)  # under autocast, the compute dtype, as the other order's conv2d returns
    padded = F.pad(input, (1, 1, 0, 0), mode="circular")
    sampled = F.grid_sample(padded, grid.expand(batch, -1, -1, -1), "bilinear", "border", align_corners=False)
    taps_as_channels = sampled.view(batch, channels * taps, out_h, out_w)
    return F.conv2d(taps_as_channels, weight.reshape(out_channels, channels * taps, 1, 1), bias)


def longitude_prefilter_widths(height, width):
    """The prefilter's window per row, in pixels (float64 ``[H]``): ``1 / cos(latitude)``, at most ``W``."""
    lat = math.pi / 2 - colatitudes(height)
    return (1 / torch.cos(lat)).clamp(max=width)


@functools.lru_cache(maxsize=64)
def _prefilter_plan(height, width, device):
    """Gather indices and fractions of ``longitude_prefilter`` (see there), cached per grid."""
    widths = longitude_prefilter_widths(height, width)
    pad = width // 2 + 1
    j = torch.arange(width, dtype=torch.float64)
    plan = []
    for offset in (widths / 2, -widths / 2):
        # F(t) = C[m] + frac x_e[m], m = floor(t + 1/2): the integral of the piecewise-constant row up to t
        t = j[None, :] + pad + offset[:, None] + 0.5
        m = torch.floor(t)
        plan += [m.long().to(device), (t - m).to(device)]
    return pad, widths.to(device), plan


def longitude_prefilter(input):
    """Low-pass every row of ``input [B, C, H, W]`` along longitude (circularly): each pixel becomes the mean of the
    row's piecewise-constant reconstruction over ``longitude_prefilter_widths`` pixels centred on it (a box of one
    equatorial pixel of arc; the identity where the window is one pixel). Computed from the row's running sum."""
    batch, channels, height, width = input.shape
    pad, widths, (m_hi, f_hi, m_lo, f_lo) = _prefilter_plan(height, width, input.device)
    work = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
    mean = work.mean(-1, keepdim=True)  # the filter keeps constants; removing the mean keeps the running sum small
    x = F.pad(work - mean, (pad, pad, 0, 0), mode="circular")  # x_e[k] = x[(k - pad) mod W]
    c = F.pad(x.cumsum(-1), (1, 0))  # c[k] = sum of x_e[:k]
    shape = (batch, channels, height, width)
    dtype = work.dtype

    def integral(m, frac):
        index = m.expand(shape)
        return c.gather(-1, index) + frac.to(dtype) * x.gather(-1, index)

    out = (integral(m_hi, f_hi) - integral(m_lo, f_lo)) / widths.to(dtype)[:, None] + mean
    return out.to(input.dtype)


def check_turn(turn, batch):
    """``turn`` (a number, or a sequence or 1-D tensor of ``batch`` numbers) as a list of finite floats: one for every
    sample, or one per sample."""
    values = turn.tolist() if isinstance(turn, torch.Tensor) else turn
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    ):
        raise TypeError(f"turn must be a number of radians or a sequence of {batch} numbers, got {turn!r}")
    if len(values) not in (1, batch) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"turn must be one finite number or {batch} finite numbers (one per sample), got {turn!r}")
    return [float(v) for v in values]


def sphere_conv(input, weight, bias=None, stride=1, antialias=False, turn=0.0):
    """SphereNet-style convolution (see the module docstring).

    Args:
        input: ``[B, C, H, W]`` equirectangular.
        weight: ``[O, C, k, k]``, ``k`` odd.
        bias: ``[O]`` or None.
        stride: int or ``(s_h, s_w)`` dividing ``(H, W)``.
        antialias: first low-pass each input row along longitude to the equator's angular resolution
            (``longitude_prefilter``; see the module docstring). Off by default.
        turn: radians by which the tap layout is turned in the tangent plane, counter-clockwise (see the module
            docstring): one number for every sample, or a sequence of ``B`` numbers, one per sample. 0 by default.

    Returns:
        ``[B, O, H / s_h, W / s_w]``.
    """
    check_input(input, "input")
    check_parameter(weight, "weight", input)
    if weight.dim() != 4 or weight.shape[1] != input.shape[1] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must have shape [O, {input.shape[1]}, k, k], got {tuple(weight.shape)}")
    k = weight.shape[2]
    if k % 2 == 0:
        raise ValueError(f"weight's kernel size must be odd, got {k}")
    if bias is not None:
        check_parameter(bias, "bias", input, "a torch.Tensor or None")
        if bias.shape != weight.shape[:1]:
            raise ValueError(f"bias must have shape [O]=[{weight.shape[0]}], got {tuple(bias.shape)}")
    s_h, s_w = pair(stride, "stride")
    height, width = input.shape[-2:]
    if height % s_h or width % s_w:
        raise ValueError(f"stride {(s_h, s_w)} must divide the input size {(height, width)}")
    turns = check_turn(turn, len(input))
    grids = [sphere_sampling_grid(height, width, (s_h, s_w), k, input.device, input.dtype, t) for t in turns]
    grid = grids[0] if len(grids) == 1 else torch.cat(grids)
    return convolve_taps(input, grid, weight, bias, antialias)

"""Crown geometry of the spherical crown convolution: which input pixels each output pixel reads, and with what weight.

Everything here depends only on ``(H, W, kernel_rad, stride, kernel_size)`` and is computed once, vectorised, in
float64 on the CPU, then cached (``crown_taps``). ``conv_plan`` turns it into device tensors for the fast op.

Longitude symmetry does the heavy lifting: an output pixel's crown, seen from its own column, is the same for every
column of its row (shifting the output by one column rotates the sphere by ``s_w`` input columns). So the geometry is a
list of *taps* per output row: ``(input row, column offset d)`` relative to ``j_p = s_w * j + (s_w - 1) // 2``, each
with the (at most four) kernel nodes its bilinear interpolation touches, the interpolation coefficient already
multiplied by the quadrature factor ``w_q / sum_{q in N(p)} w_q``. The convolution is then

    y[n, o, i, j] = bias[o] + sum_{t in taps(i)} sum_c E[o, c, i, t] * x[n, c, row_t, j_p + d_t]
    E[o, c, i, t] = sum_{m < 4} coef[i, t, m] * weight[o, c, node[i, t, m]]

a per-row "effective kernel" applied as a batched GEMM (see ``sconv.functional.sconv``).
"""

import functools
import math
import warnings
from dataclasses import dataclass

import torch

from sconv.functional.common import colatitudes, quadrature_weight

__all__ = [
    "CrownTaps",
    "crown_taps",
    "conv_plan",
    "row_interpolation_matrix",
    "equator_kernel_basis",
    "smooth_kernel_basis",
    "RIM_TOLERANCE",
    "POLE_TOLERANCE",
]

RIM_TOLERANCE = 1e-9  # points with alpha <= r + 1e-9 are in the crown (spec: keeps points exactly on the rim)
POLE_TOLERANCE = 1e-9  # beta is undefined where sqrt(v_x^2 + v_y^2) < 1e-9 (q is p or its antipode)
BUCKET_RATIO = 1.25  # rows whose tap counts lie within this ratio share one padded GEMM


@dataclass(frozen=True)
class CrownTaps:
    """The taps of every output row, concatenated row after row (CPU tensors).

    Attributes:
        out_size: ``(H', W')``.
        row_ptr: ``[H' + 1]`` int64; the taps of output row ``i`` are ``row_ptr[i]:row_ptr[i + 1]``.
        in_row: ``[T]`` int64, the input row of each tap.
        col_offset: ``[T]`` int64, the input column offset ``d`` from ``j_p``, in ``[-floor(W/2), ceil(W/2))``.
        alpha, beta: ``[T]`` float64 kernel coordinates (beta is 0 where it is undefined).
        node: ``[T, 4]`` int64, flat kernel node ``a * kw + b`` of each interpolation corner.
        coef: ``[T, 4]`` float64, interpolation coefficient times ``w_q / sum w_q`` (0 for unused corners).

    A tap whose beta is undefined (q is p or its antipode) appears ``kw`` times, once per beta node, with the
    alpha-interpolated value divided by ``kw``: the spec's "mean over b".
    """

    out_size: tuple
    row_ptr: torch.Tensor
    in_row: torch.Tensor
    col_offset: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    node: torch.Tensor
    coef: torch.Tensor

    def taps_per_row(self):
        return self.row_ptr.diff()


def kernel_coordinates(theta_p, theta_q, dphi):
    """Spec's kernel coordinates ``(alpha, beta, rho)`` of input points q seen from output points p (float64).

    ``v = R_p^T u(q)`` written out with ``dphi = phi_q - phi_p``; ``rho = sqrt(v_x^2 + v_y^2)``.
    """
    sin_q = torch.sin(theta_q)
    vx = torch.cos(theta_p) * sin_q * torch.cos(dphi) - torch.sin(theta_p) * torch.cos(theta_q)
    vy = sin_q * torch.sin(dphi)
    vz = torch.sin(theta_p) * sin_q * torch.cos(dphi) + torch.cos(theta_p) * torch.cos(theta_q)
    rho = torch.hypot(vx, vy)
    alpha = torch.atan2(rho, vz)
    beta = torch.remainder(torch.atan2(vy, vx), 2 * math.pi)
    return alpha, beta, rho


def _column_phase(stride_w):
    """``c0`` with ``phi_q - phi_p = (d + c0) 2 pi / W`` for input column ``j_p + d`` (0 for odd strides, -1/2 else)."""
    return ((stride_w - 1) // 2) + 0.5 - stride_w / 2


def smallest_radius(height, width, stride):
    """The smallest kernel radius for which every output pixel's crown holds an input pixel centre."""
    s_h, s_w = stride
    theta_p = colatitudes(height // s_h)[:, None]
    theta_q = colatitudes(height)[None, :]
    dphi = torch.tensor(abs(_column_phase(s_w)) * 2 * math.pi / width, dtype=torch.float64)
    alpha, _, _ = kernel_coordinates(theta_p, theta_q, dphi)
    return alpha.min(dim=1).values.max().item()


def _candidates(height, width, kernel_rad, stride):
    """Every (output row, input row, column offset) that may lie in the crown, a superset found in closed form.

    Returned as the row pairs that may meet (``pair_out_row``, ``pair_in_row``, each ``[P]``) and, per candidate, its
    pair (``[N]`` index into those) and column offset (``[N]``): the trigonometry then runs per pair and per offset.
    """
    s_h, s_w = stride
    theta_p = colatitudes(height // s_h)
    theta_q = colatitudes(height)
    reach = kernel_rad + RIM_TOLERANCE + 1e-12
    out_row, in_row = torch.nonzero((theta_q[None, :] - theta_p[:, None]).abs() <= reach, as_tuple=True)
    tp, tq = theta_p[out_row], theta_q[in_row]
    # Half-width in longitude of the crown on the latitude circle of tq: cos(alpha) >= cos(reach).
    cos_half = (math.cos(min(reach, math.pi)) - torch.cos(tp) * torch.cos(tq)) / (torch.sin(tp) * torch.sin(tq))
    half = torch.where(cos_half <= -1, math.pi, torch.arccos(cos_half.clamp(-1.0, 1.0)))
    half_cols = half * width / (2 * math.pi)
    c0 = _column_phase(s_w)
    d_min, d_max = -(width // 2), (width + 1) // 2 - 1
    lo = (torch.ceil(-half_cols - c0) - 1).long().clamp(min=d_min)
    hi = (torch.floor(half_cols - c0) + 1).long().clamp(max=d_max)
    whole = 2 * half_cols + 3 >= width - 1  # the arc (plus margin) wraps around: take every column
    lo = torch.where(whole, torch.full_like(lo, d_min), lo)
    hi = torch.where(whole, torch.full_like(hi, d_max), hi)
    counts = hi - lo + 1
    pair = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offset = torch.arange(len(pair)) + (lo - (torch.cumsum(counts, 0) - counts))[pair]
    return out_row, in_row, pair, offset


@functools.lru_cache(maxsize=128)
def crown_taps(height, width, kernel_rad, stride, kernel_size):
    """Geometry of ``spherical_conv`` for an ``H x W`` input (see ``CrownTaps``); cached per configuration.

    Args:
        height, width: input size.
        kernel_rad: crown radius r in radians, ``0 < r <= pi``.
        stride: ``(s_h, s_w)`` dividing ``(H, W)``.
        kernel_size: ``(kh, kw)`` kernel nodes in alpha and beta.

    Raises:
        ValueError: some output pixel's crown holds no input pixel centre (names the smallest usable radius).
    """
    s_h, s_w = stride
    kh, kw = kernel_size
    out_h, out_w = height // s_h, width // s_w
    pair_out, pair_in, pair, offset = _candidates(height, width, kernel_rad, stride)

    # kernel_coordinates, factored: the colatitude terms depend on the row pair only, the longitude terms on the
    # column offset only (a table over the W possible offsets), so each candidate costs a few multiply-adds.
    theta_p, theta_q = colatitudes(out_h)[pair_out], colatitudes(height)[pair_in]
    sin_p, cos_p, sin_q, cos_q = torch.sin(theta_p), torch.cos(theta_p), torch.sin(theta_q), torch.cos(theta_q)
    d_min = -(width // 2)
    dphi = (torch.arange(d_min, (width + 1) // 2, dtype=torch.float64) + _column_phase(s_w)) * (2 * math.pi / width)
    column = offset - d_min
    cos_d, sin_d = torch.cos(dphi)[column], torch.sin(dphi)[column]
    vx = (cos_p * sin_q)[pair] * cos_d - (sin_p * cos_q)[pair]
    vy = sin_q[pair] * sin_d
    vz = (sin_p * sin_q)[pair] * cos_d + (cos_p * cos_q)[pair]
    rho = torch.hypot(vx, vy)
    alpha = torch.atan2(rho, vz)

    keep = torch.nonzero(alpha <= kernel_rad + RIM_TOLERANCE).squeeze(1)
    # Undefined beta (q is p or its antipode): the tap is repeated once per beta node b (see CrownTaps). One gather
    # takes the kept candidates, with those repeats, out of every per-candidate array.
    pole = torch.nonzero(rho[keep] < POLE_TOLERANCE).squeeze(1)
    if len(pole):
        repeats = torch.ones_like(keep).index_fill_(0, pole, kw)
        first = torch.cumsum(repeats, 0) - repeats
        keep = torch.repeat_interleave(keep, repeats)
        pole = (first[pole][:, None] + torch.arange(kw)).reshape(-1)  # each pole tap's kw copies, consecutive
    pair, offset, alpha = pair[keep], offset[keep], alpha[keep]
    beta = torch.remainder(torch.atan2(vy[keep], vx[keep]), 2 * math.pi)

    taps_per_pair = torch.bincount(pair, minlength=len(pair_out))
    taps = torch.zeros(out_h, dtype=torch.long).index_add_(0, pair_out, taps_per_pair)
    if bool((taps == 0).any()):
        need = smallest_radius(height, width, stride)
        raise ValueError(
            f"kernel_rad={kernel_rad:.6g} is too small for a {height}x{width} input with stride {stride}: some output "
            f"pixel's crown holds no input pixel centre; use kernel_rad >= {need + 2 * RIM_TOLERANCE:.9g}"
        )

    # Bilinear interpolation over the nodes alpha_a = a r / (kh - 1), beta_b = b 2 pi / kw (periodic in b).
    if kh == 1:
        a0 = torch.zeros_like(pair)
        fa = torch.zeros_like(alpha)
    else:
        a_pos = (alpha / (kernel_rad / (kh - 1))).clamp(0, kh - 1)
        a0 = a_pos.floor().clamp(max=kh - 2)
        fa = a_pos - a0
        a0 = a0.long()
    a1 = (a0 + 1).clamp(max=kh - 1)
    b_pos = beta / (2 * math.pi / kw)
    b_floor = b_pos.floor()
    fb = b_pos - b_floor
    b0 = b_floor.long()
    b0 = torch.where(b0 >= kw, b0 - kw, b0)  # beta in [0, 2 pi] after rounding: b_floor in [0, kw]
    b1 = torch.where(b0 == kw - 1, b0 + 1 - kw, b0 + 1)
    # Columns written in place: torch.stack interleaving four [T] tensors is several times slower here.
    node, coef = torch.empty(len(b0), 4, dtype=torch.long), torch.empty(len(b0), 4, dtype=torch.float64)
    row_a0, row_a1, ga, gb = a0 * kw, a1 * kw, 1 - fa, 1 - fb
    corners = ((row_a0, b0, ga, gb), (row_a0, b1, ga, fb), (row_a1, b0, fa, gb), (row_a1, b1, fa, fb))
    for m, (row, col, c_a, c_b) in enumerate(corners):
        torch.add(row, col, out=node[:, m])
        torch.mul(c_a, c_b, out=coef[:, m])

    # The kw copies of a pole tap carry (1-fa)/kw at node (a0, b) and fa/kw at (a1, b), b = 0 .. kw-1.
    distinct = taps_per_pair.double()  # input points per row pair: a pole tap's kw copies count once
    if len(pole):
        b = torch.arange(len(pole)) % kw
        a0p, a1p, fap = a0[pole], a1[pole], fa[pole]
        node[pole] = torch.stack([a0p * kw + b, a1p * kw + b, a0p * kw, a0p * kw], dim=1)
        coef[pole] = torch.stack([(1 - fap) / kw, fap / kw, torch.zeros_like(fap), torch.zeros_like(fap)], dim=1)
        beta[pole] = 0.0
        distinct.index_add_(0, pair[pole], torch.full((len(pole),), 1.0 / kw - 1, dtype=torch.float64))

    # Quadrature: w_q / sum_{q in N(p)} w_q, the sum taken over distinct input points; w_q depends on the pair only.
    w_pair = quadrature_weight(height)[pair_in]
    norm = torch.zeros(out_h, dtype=torch.float64).index_add_(0, pair_out, w_pair * distinct)
    coef.mul_((w_pair / norm[pair_out])[pair][:, None])

    row_ptr = torch.zeros(out_h + 1, dtype=torch.long)
    row_ptr[1:] = torch.cumsum(taps, 0)
    return CrownTaps((out_h, out_w), row_ptr, pair_in[pair], offset, alpha, beta, node, coef)


@dataclass(frozen=True)
class ConvBucket:
    """Output rows of similar tap count, their taps padded to a common length (device tensors)."""

    out_rows: torch.Tensor  # [R]
    source: torch.Tensor  # [R * T * W'] flat index into the width-padded input [H, Wp] of each tap and output column
    node: torch.Tensor  # [R, T, 4]
    coef: torch.Tensor  # [R, T, 4], zero on padding taps


@dataclass(frozen=True)
class ConvWindow:
    """How far to pad the input's width so that output column j reads padded columns
    ``start + s_w * j + (0 .. size - 1)``, the window holding every tap's column offset ``d`` at ``d - d_min``."""

    pad_left: int
    pad_right: int
    start: int
    size: int
    d_min: int


def conv_window(geom, width, stride_w):
    d_lo, d_hi = int(geom.col_offset.min()), int(geom.col_offset.max())
    first = (stride_w - 1) // 2 + d_lo  # column of output column 0's leftmost tap, relative to input column 0
    size = d_hi - d_lo + 1
    last = stride_w * (geom.out_size[1] - 1) + first + size - 1
    pad_left, pad_right = max(0, -first), max(0, last - (width - 1))
    return ConvWindow(pad_left, pad_right, first + pad_left, size, d_lo)


@dataclass(frozen=True)
class ConvPlan:
    """What the gather path of ``spherical_conv`` needs on one device and dtype: row buckets and their order."""

    window: ConvWindow
    buckets: tuple
    row_order: torch.Tensor  # [H'] position of output row i in the concatenated bucket outputs


def _buckets(taps_per_row):
    """Group output rows so that within a group the largest tap count is at most BUCKET_RATIO times the smallest."""
    order = torch.argsort(taps_per_row, descending=True, stable=True).tolist()
    groups, current = [], []
    for row in order:
        if current and taps_per_row[current[0]] > BUCKET_RATIO * taps_per_row[row]:
            groups.append(current)
            current = []
        current.append(row)
    groups.append(current)
    return groups


@functools.lru_cache(maxsize=256)
def conv_plan(height, width, kernel_rad, stride, kernel_size, device, dtype):
    """``crown_taps`` laid out for the row-bucketed gather and batched GEMM on ``device`` in ``dtype``; cached."""
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    window = conv_window(geom, width, stride[1])
    out_w = geom.out_size[1]
    padded_w = width + window.pad_left + window.pad_right
    counts = geom.taps_per_row()
    buckets, ordered_rows = [], []
    for rows in _buckets(counts):
        rows_t = torch.tensor(rows, dtype=torch.long)
        longest = int(counts[rows_t].max())
        # Padding taps point at the first tap of their row with zero coefficients.
        slot = torch.arange(longest)[None, :]
        valid = slot < counts[rows_t][:, None]
        tap = geom.row_ptr[rows_t][:, None] + torch.where(valid, slot, 0)
        column = window.start + (geom.col_offset[tap] - window.d_min)[..., None] + stride[1] * torch.arange(out_w)
        buckets.append(
            ConvBucket(
                out_rows=rows_t.to(device),
                source=(geom.in_row[tap][..., None] * padded_w + column).reshape(-1).to(device),
                node=geom.node[tap].to(device),
                coef=(geom.coef[tap] * valid[..., None]).to(device=device, dtype=dtype),
            )
        )
        ordered_rows.extend(rows)
    row_order = torch.empty(len(ordered_rows), dtype=torch.long)
    row_order[torch.tensor(ordered_rows)] = torch.arange(len(ordered_rows))
    return ConvPlan(window, tuple(buckets), row_order.to(device))


@functools.lru_cache(maxsize=256)
def padded_taps(height, width, kernel_rad, stride, kernel_size):
    """Taps the gather path multiplies, padding included (its GEMM's cost), summed over output rows."""
    counts = crown_taps(height, width, kernel_rad, stride, kernel_size).taps_per_row()
    return sum(len(rows) * int(counts[rows[0]]) for rows in _buckets(counts))


@dataclass(frozen=True)
class SparsePlan:
    """The crown sum over the whole image as one sparse matrix (and its transpose, for the backward pass).

    ``mix_first``: ``[H' W', Hp Wp kh kw]``, summing a node-expanded input ``U[q, k]`` into output pixels.
    Otherwise ``[H' W' kh kw, Hp Wp]``, projecting the input onto the nodes: ``Z[p, k]``. The node index is the inner
    one, so that the channel-mixing GEMM reads ``U`` and ``Z`` as ``[pixels, nodes x channels]`` matrices in place.
    A ``wrapped`` plan reads the unpadded input (``Hp Wp`` becomes ``H W``): its columns go around the sphere, which
    is padding mode "sphere" without the padded copy (the crowns near the poles span every longitude, so that copy
    is twice the input, and so is mix_first's ``U`` over it).
    """

    window: ConvWindow
    matrix: torch.Tensor
    matrix_t: torch.Tensor


@functools.lru_cache(maxsize=64)
def sparse_plan(height, width, kernel_rad, stride, kernel_size, mix_first, wrapped, device, dtype):
    """``crown_taps`` expanded over output columns into a CSR matrix on ``device`` in ``dtype``; cached.
    ``wrapped``: index the unpadded input around the sphere (see ``SparsePlan``)."""
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    window = conv_window(geom, width, stride[1])
    out_h, out_w = geom.out_size
    padded_w = width + window.pad_left + window.pad_right
    nodes = kernel_size[0] * kernel_size[1]
    out_row = torch.repeat_interleave(torch.arange(out_h), geom.taps_per_row())
    j = torch.arange(out_w)
    column = window.start + stride[1] * j[None, :] + (geom.col_offset - window.d_min)[:, None]  # [T, W']
    if wrapped:  # padded column c holds input column (c - pad_left) mod W
        column, padded_w = (column - window.pad_left) % width, width
    q = (geom.in_row[:, None] * padded_w + column)[:, :, None].expand(-1, -1, 4)
    p = (out_row[:, None] * out_w + j[None, :])[:, :, None].expand(-1, -1, 4)
    k = geom.node[:, None, :].expand(-1, out_w, -1)
    value = geom.coef[:, None, :].expand(-1, out_w, -1)
    keep = value != 0
    p, q, k, value = p[keep], q[keep], k[keep], value[keep]
    in_size = height * padded_w
    if mix_first:
        index, shape = torch.stack([p, q * nodes + k]), (out_h * out_w, nodes * in_size)
    else:
        index, shape = torch.stack([p * nodes + k, q]), (nodes * out_h * out_w, in_size)
    with warnings.catch_warnings():  # torch's notes on sparse tensors ("in beta", "invariant checks"): indices are ours
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        warnings.filterwarnings("ignore", message=".*Sparse invariant checks are implicitly disabled.*")
        matrix = torch.sparse_coo_tensor(index, value, shape, check_invariants=True).coalesce()
        csr, csr_t = (m.to(dtype).to_sparse_csr().to(device) for m in (matrix, matrix.t().coalesce()))
    return SparsePlan(window, csr, csr_t)


# ---------------------------------------------------------------------------------------------------------------
# Which kernel directions the grid resolves: options of ``SphericalConv(kernel_basis=...)``


def row_interpolation_matrix(geom, row, width, nodes):
    """``A [P, nodes]`` (float64) of output row ``row`` of ``geom`` (a ``CrownTaps`` of a ``width``-column input): its
    effective kernel on its ``P`` distinct input points is ``A @ weight.flatten()`` (the kw copies of a pole tap are
    summed: they read one pixel). ``nodes = kh * kw``."""
    start, end = int(geom.row_ptr[row]), int(geom.row_ptr[row + 1])
    _, point = torch.unique(geom.in_row[start:end] * width + geom.col_offset[start:end], return_inverse=True)
    matrix = torch.zeros(int(point.max()) + 1, nodes, dtype=torch.float64)
    index = (point[:, None].expand(-1, 4).reshape(-1), geom.node[start:end].reshape(-1))
    matrix.index_put_(index, geom.coef[start:end].reshape(-1), accumulate=True)
    return matrix


@functools.lru_cache(maxsize=64)
def equator_kernel_basis(height, width, kernel_rad, kernel_size):
    """Orthonormal basis ``[kh kw, m]`` (float64) of the kernels the equatorial crown can tell apart: the row space of
    the interpolation matrix of the output row nearest the equator (stride 1).

    A kernel component orthogonal to it is invisible at the equator: it gets no gradient from data there, yet it is
    read at other latitudes, where the crowns hold more pixels. Kernels restricted to this basis are learnt whole from
    equatorial data. ``m <= kh kw``; ``m`` is the number of kernel directions the grid resolves there.
    """
    geom = crown_taps(height, width, kernel_rad, (1, 1), kernel_size)
    matrix = row_interpolation_matrix(geom, max(height // 2 - 1, 0), width, kernel_size[0] * kernel_size[1])
    _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = int((singular > 1e-9 * singular[0]).sum())
    return vh[:rank].T.contiguous()


@functools.lru_cache(maxsize=64)
def smooth_kernel_basis(kernel_size, radial_degree=2, harmonics=2):
    """Orthonormal basis ``[kh kw, m]`` (float64) of smooth kernels on the crown's nodes: ``t^n`` (``t = alpha / r``,
    ``n <= radial_degree``) times ``1, cos(k beta), sin(k beta)`` (``k <= harmonics``), with ``n >= 1`` for ``k >= 1``
    so that every basis kernel is single-valued at the centre. Degrees above what the node grid holds are dropped."""
    kh, kw = kernel_size
    t = torch.linspace(0, 1, kh, dtype=torch.float64) if kh > 1 else torch.zeros(1, dtype=torch.float64)
    beta = torch.arange(kw, dtype=torch.float64) * (2 * math.pi / kw)
    columns = []
    for n in range(min(radial_degree, kh - 1) + 1):
        columns.append((t[:, None] ** n).expand(kh, kw))
        for k in range(1, min(harmonics, (kw - 1) // 2) + 1):
            if n >= 1:
                columns += [t[:, None] ** n * torch.cos(k * beta), t[:, None] ** n * torch.sin(k * beta)]
    q, r = torch.linalg.qr(torch.stack([c.reshape(-1) for c in columns], dim=1))
    keep = r.diagonal().abs() > 1e-9
    return q[:, keep].contiguous()

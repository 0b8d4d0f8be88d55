"""Triton kernels for the gather formulation of ``spherical_conv`` on CUDA: forward and both gradients.

The crown sum of output row ``i`` is one GEMM whose reduction runs over (tap, input channel) pairs ``k = t C + c``:

    y[b, o, i, j] = sum_{t in taps(i)} sum_c E[t, o, c] * x_pad[b, c, row_t, col_t + s_w j]

with ``E[t, o, c] = sum_k nodes[t, k] weight[o, c, k]`` the effective kernel of tap ``t`` (``nodes``: the tap's
bilinear-interpolation and quadrature coefficients on the ``kh kw`` kernel nodes, from ``crown_taps``; E is built by
one GEMM, and rebuilt in the backward pass rather than kept) and ``x_pad`` the width-padded input, made channels
last in one pass by ``triton_layout.wrap_pad`` (rebuilt in the backward too: only ``x`` is kept). The kernels read
``x_pad`` where it lies (no im2col buffer):

- forward: a program per (output row, block of the flattened (batch, output column) axis, block of output channels);
- grad E: a program per (block of k within one output row, block of O), reducing over batch and output columns;
  grad weight = grad_E^T nodes is one more GEMM;
- grad x: a program per (input row, block of columns or whole narrow rows of several images, block of C), over the
  taps that read that input row. Every element is written once: no atomics, deterministic. With the padding around
  the sphere done by ``wrap_pad``, the kernel works on the input's own columns, each tap reading them around the
  circle (column ``(col_t + s_w j) mod W``): the padding's copies are summed in place, written as ``[B, C, H, W]``;
- grad x for few input channels (C_out >= 8 C_in, a first layer): the tap products
  ``P[t, (b, j), c] = sum_o E[t, o, c] grad_y[b, i_t, j, o]`` (one GEMM-like kernel per block of taps of an output
  row, reading grad_y once per block rather than once per tap; P is stored by entry, the taps in input-row order),
  then a fold that sums, for each input pixel, the products of the entries that read it (the same blocks as the
  kernel above, no atomics).

Rows are launched heaviest first: near the poles a crown holds many more pixels than at the equator.
The CPU (and float64) path is the pure-PyTorch one in ``sconv.functional.sconv``; tests compare the two on a GPU.
"""

import functools
from dataclasses import dataclass

import torch

from sconv.functional.crown import conv_window, crown_taps
from sconv.functional.triton_layout import wrap_pad

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the PyTorch paths are used
    triton = None

__all__ = ["triton_available", "TritonPlan", "triton_plan", "crown_gather"]

TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_available(device, dtype):
    """Whether ``crown_gather`` can run for tensors on ``device`` in ``dtype`` (CUDA with Triton, not float64)."""
    return triton is not None and torch.device(device).type == "cuda" and dtype in TRITON_DTYPES


@dataclass(frozen=True, eq=False)
class TritonPlan:
    """``crown_taps`` as the kernels read it (int32 device tensors; T taps, H input rows, H' output rows).

    Attributes:
        window: the width padding (``ConvWindow``); ``padded_w`` the padded width Wp.
        row_ptr: ``[H' + 1]``, taps of output row i are ``row_ptr[i]:row_ptr[i + 1]``; ``row_order`` ``[H']``
            output rows by decreasing tap count (launch order).
        tap_row: ``[T]`` output row of each tap; ``tap_base``: ``[T]`` position ``row_t Wp + col_t`` in the padded
            input plane of the tap's value for output column 0.
        in_taps: ``[T]`` the taps grouped by input row, by column within a row (the input-gradient kernel's
            "entries"); ``in_ptr`` ``[H + 1]`` the groups. ``entry_row`` / ``entry_column``: ``[T]`` each entry's
            output row and padded input column for output column 0, so that the kernel reads them, and E (built
            from ``entry_nodes``), directly by entry rather than through ``in_taps``; ``tap_entry`` ``[T]`` the
            entry of each tap (the inverse of ``in_taps``).
        nodes: ``[T, kh kw]`` float32, each tap's coefficient on each kernel node; ``entry_nodes`` the same in entry
            order.
        entry_input_column: ``[T]`` each entry's column in the unpadded input for output column 0,
            ``(entry_column - pad_left) mod W``: the input-gradient kernels read it when the padding around the
            sphere is theirs to fold (``wrapped``).
        host: ``row_ptr``, ``in_ptr`` and ``entry_column`` on the CPU (int64), for the launch tables.
    """

    window: object
    padded_w: int
    row_ptr: torch.Tensor
    row_order: torch.Tensor
    tap_row: torch.Tensor
    tap_base: torch.Tensor
    in_taps: torch.Tensor
    in_ptr: torch.Tensor
    entry_row: torch.Tensor
    entry_column: torch.Tensor
    tap_entry: torch.Tensor
    nodes: torch.Tensor
    entry_nodes: torch.Tensor
    entry_input_column: torch.Tensor
    host: dict

    def input_columns(self, wrapped):
        """Each entry's column for output column 0 as the input-gradient kernels read it: in the unpadded input when
        they fold the padding around the sphere themselves (``wrapped``), else in the padded one."""
        return self.entry_input_column if wrapped else self.entry_column


@functools.lru_cache(maxsize=256)
def triton_plan(height, width, kernel_rad, stride, kernel_size, device):
    """The ``TritonPlan`` of one configuration on ``device``; cached."""
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    window = conv_window(geom, width, stride[1])
    padded_w = width + window.pad_left + window.pad_right
    out_h = geom.out_size[0]
    taps = len(geom.in_row)
    if height * padded_w >= 2**31:
        raise ValueError(f"a {height}x{width} input with kernel_rad={kernel_rad:.6g} is too large for the int32 plan")
    counts = geom.taps_per_row()
    tap_row = torch.repeat_interleave(torch.arange(out_h), counts)
    tap_base = geom.in_row * padded_w + window.start + (geom.col_offset - window.d_min)
    in_taps = torch.argsort(tap_base, stable=True)  # by input row, then by column
    entry_column = tap_base[in_taps] % padded_w
    in_ptr = torch.zeros(height + 1, dtype=torch.long)
    in_ptr[1:] = torch.cumsum(torch.bincount(geom.in_row, minlength=height), 0)
    nodes = torch.zeros(taps, kernel_size[0] * kernel_size[1], dtype=torch.float64)
    nodes.index_put_((torch.arange(taps)[:, None].expand(-1, 4), geom.node), geom.coef, accumulate=True)
    host = dict(row_ptr=geom.row_ptr, in_ptr=in_ptr, entry_column=entry_column)

    def dev(t):
        return t.to(device=device, dtype=torch.int32)

    return TritonPlan(
        window=window,
        padded_w=padded_w,
        row_ptr=dev(geom.row_ptr),
        row_order=dev(torch.argsort(counts, descending=True, stable=True)),
        tap_row=dev(tap_row),
        tap_base=dev(tap_base),
        in_taps=dev(in_taps),
        in_ptr=dev(in_ptr),
        entry_row=dev(tap_row[in_taps]),
        entry_column=dev(entry_column),
        tap_entry=dev(torch.argsort(in_taps)),
        nodes=nodes.to(device=device, dtype=torch.float32),
        entry_nodes=nodes[in_taps].to(device=device, dtype=torch.float32),
        entry_input_column=dev((entry_column - window.pad_left) % width),
        host=host,
    )


@functools.lru_cache(maxsize=256)
def _kernel_grad_blocks(plan, channels, block_n):
    """Blocks of ``block_n`` consecutive k = t C + c within one output row: ``(row, first k)`` per block, int32."""
    k_ptr = plan.host["row_ptr"] * channels
    blocks = -(-k_ptr.diff() // block_n)
    rows = torch.repeat_interleave(torch.arange(len(blocks)), blocks)
    first = k_ptr[rows] + (torch.arange(len(rows)) - (torch.cumsum(blocks, 0) - blocks)[rows]) * block_n
    device = plan.row_ptr.device
    return rows.to(device, torch.int32), first.to(device, torch.int32)


@functools.lru_cache(maxsize=256)
def _input_grad_blocks(plan, height, out_w, stride_w, block_q, wrapped):
    """Blocks of ``block_q`` columns of one input row, with the range of ``in_taps`` (entries) that reach them.

    ``wrapped``: the columns are the unpadded input's, and every entry of the row reaches each block (an entry reads
    ``W'`` columns ``s_w`` apart around the whole circle). Otherwise they are padded columns: a tap whose output
    column 0 reads padded column ``cb`` reaches columns ``cb .. cb + s_w (W' - 1)``; the taps of a row are sorted by
    ``cb``, so those reaching a block are a contiguous range. Blocks come heaviest first.
    """
    padded_w = plan.padded_w
    in_ptr = plan.host["in_ptr"]
    n_cols = padded_w - plan.window.pad_left - plan.window.pad_right if wrapped else padded_w
    n_qb = -(-n_cols // block_q)
    q = torch.arange(height).repeat_interleave(n_qb)
    first_col = torch.arange(n_qb).repeat(height) * block_q
    lo, hi = in_ptr[q], in_ptr[q + 1]
    if not wrapped:
        # Sort key (row, cb) is increasing over all entries (cb sorted within each input row): search in it once for
        # every block.
        key = torch.repeat_interleave(torch.arange(height), in_ptr.diff()) * (2 * padded_w) + plan.host["entry_column"]
        lo = torch.maximum(lo, torch.searchsorted(key, q * (2 * padded_w) + first_col - stride_w * (out_w - 1)))
        hi = torch.minimum(hi, torch.searchsorted(key, q * (2 * padded_w) + first_col + block_q))
    order = torch.argsort(hi - lo, descending=True, stable=True)
    device = plan.row_ptr.device
    return tuple(t[order].to(device, torch.int32) for t in (q, first_col, lo, hi))


def _block(n, largest):
    """The smallest power of two >= n, between 16 (tl.dot's minimum) and ``largest``."""
    return max(16, min(largest, triton.next_power_of_2(n)))


def _precision(dtype):
    # float32 follows torch's matmul setting: TF32 tensor cores only where the user allowed them.
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


# Layouts: x_cl [B, H, Wp, C] (channels last, width-padded), E [T, O, C] (k = t C + c), y and grad_y [B, O, H', W'],
# grad_y_cl [B, H', W', O]. Channels last makes every tile's reduction axis contiguous in memory.
if triton is not None:

    @triton.jit
    def _output_column(rel, n_cols, out_w, stride_w, WRAPPED: tl.constexpr):
        """``(j, reads)``: for a column ``rel`` columns right of where an entry reads output column 0, the output
        column j whose tap reads it, and whether one does (mod ``n_cols`` = W around the sphere if WRAPPED)."""
        if WRAPPED:
            rel = tl.where(rel < 0, rel + n_cols, rel)
        j = rel // stride_w
        return j, (rel >= 0) & (rel - j * stride_w == 0) & (j < out_w)

    @triton.jit
    def _forward_kernel(
        x_ptr, e_ptr, b_ptr, y_ptr, row_ptr, row_order, tap_base,
        n_batch, n_in, n_out, height, padded_w, out_h, out_w, stride_w,
        BLOCK_O: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr, TAP_MAJOR: tl.constexpr,
        HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        # A program: one output row i, BLOCK_J output columns of the flattened (batch, column) axis n = b W' + j (so
        # that narrow rows still fill a tile and the programs of one row, which read the same E, run side by side),
        # BLOCK_O output channels.
        n_cols = n_batch * out_w
        n_jb = tl.cdiv(n_cols, BLOCK_J)
        pid = tl.program_id(0)
        i = tl.load(row_order + pid // n_jb)
        offs_n = (pid % n_jb) * BLOCK_J + tl.arange(0, BLOCK_J)
        offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        mask_j = offs_n < n_cols
        mask_o = offs_o < n_out
        b = (offs_n // out_w).to(tl.int64)
        j = offs_n % out_w
        j_off = b * height * padded_w * n_in + j.to(tl.int64) * stride_w * n_in
        e_rows = e_ptr + offs_o.to(tl.int64)[:, None] * n_in  # E[t, o, c] at (t O + o) C + c
        k_lo = tl.load(row_ptr + i) * n_in
        k_hi = tl.load(row_ptr + i + 1) * n_in
        acc = tl.zeros((BLOCK_O, BLOCK_J), dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            if TAP_MAJOR:  # n_in is a multiple of BLOCK_K: the block lies within one tap
                t = k0 // n_in
                c = ks - t * n_in
                x_off = tl.load(tap_base + t).to(tl.int64) * n_in + c
                xv = tl.load(x_ptr + x_off[:, None] + j_off[None, :], mask=mask_j[None, :], other=0.0)
                ev = tl.load(e_rows + (t.to(tl.int64) * n_out * n_in + c)[None, :], mask=mask_o[:, None], other=0.0)
            else:
                mask_k = ks < k_hi
                t = ks // n_in
                c = ks - t * n_in
                x_off = tl.load(tap_base + t, mask=mask_k, other=0).to(tl.int64) * n_in + c
                mask_x = mask_k[:, None] & mask_j[None, :]
                xv = tl.load(x_ptr + x_off[:, None] + j_off[None, :], mask=mask_x, other=0.0)
                e_off = t.to(tl.int64) * n_out * n_in + c
                ev = tl.load(e_rows + e_off[None, :], mask=mask_o[:, None] & mask_k[None, :], other=0.0)
            acc = tl.dot(ev, xv, acc, input_precision=PRECISION)
        if HAS_BIAS:  # added in float32, before the cast to the compute dtype
            acc += tl.load(b_ptr + offs_o, mask=mask_o, other=0.0).to(tl.float32)[:, None]
        y_off = offs_o[:, None] * out_h * out_w + (b * n_out * out_h * out_w + i * out_w + j)[None, :]
        tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_j[None, :])

    @triton.jit
    def _grad_kernel_kernel(
        x_ptr, gy_ptr, ge_ptr, block_row, block_k, row_ptr, tap_base,
        n_batch, n_in, n_out, height, padded_w, out_h, out_w, stride_w,
        BLOCK_O: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr, CHANNELS_16: tl.constexpr,
        X_NCHW: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        # A program: grad E[o, k] for BLOCK_O channels and BLOCK_N consecutive k of one output row i, reducing
        # grad_y[b, o, i, j] x[b, row_t, col_t + s_w j, c] over the batch and the output columns.
        pid = tl.program_id(0)
        i = tl.load(block_row + pid)
        k_first = tl.load(block_k + pid)
        # A block starts at its row's first k (a multiple of C) plus whole blocks of BLOCK_N: with C a multiple of 16,
        # a multiple of 16, so the k mask is constant over runs of 16 and the input tile loads as vectors.
        if CHANNELS_16:
            k_first = tl.multiple_of(k_first, 16)
        offs_n = k_first + tl.arange(0, BLOCK_N)
        offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        mask_n = offs_n < tl.load(row_ptr + i + 1) * n_in
        mask_o = offs_o < n_out
        t = offs_n // n_in
        base = tl.load(tap_base + t, mask=mask_n, other=0).to(tl.int64)
        if X_NCHW:  # x as [B, C, H, Wp]: the reduction axis j is contiguous (the layout tf32 tensor cores take)
            x_col = (offs_n - t * n_in).to(tl.int64) * height * padded_w + base
            j_step = stride_w
            b_step = n_in * height * padded_w
        else:
            x_col = base * n_in + (offs_n - t * n_in)
            if CHANNELS_16:  # runs of 16 consecutive k share a tap and start at a multiple of 16: vector loads
                x_col = tl.max_contiguous(tl.multiple_of(x_col, 16), 16)
            j_step = stride_w * n_in
            b_step = height * padded_w * n_in
        gy_rows = gy_ptr + offs_o.to(tl.int64)[:, None] * out_h * out_w + i * out_w
        n_jb = tl.cdiv(out_w, BLOCK_J)
        acc = tl.zeros((BLOCK_O, BLOCK_N), dtype=tl.float32)
        # Image by image (not over a flattened (b, j) axis): j stays contiguous within a tile, so loads vectorise.
        for step in range(0, n_batch * n_jb):
            b = (step // n_jb).to(tl.int64)
            offs_j = (step % n_jb) * BLOCK_J + tl.arange(0, BLOCK_J)
            mask_j = offs_j < out_w
            gv = tl.load(gy_rows + b * n_out * out_h * out_w + offs_j[None, :], mask=mask_o[:, None] & mask_j[None, :],
                         other=0.0)  # fmt: skip
            x_off = b * b_step + x_col[None, :] + offs_j.to(tl.int64)[:, None] * j_step
            xv = tl.load(x_ptr + x_off, mask=mask_j[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(gv, xv, acc, input_precision=PRECISION)
        ge_off = offs_o.to(tl.int64)[:, None] * n_in + (t.to(tl.int64) * n_out * n_in + offs_n - t * n_in)[None, :]
        tl.store(ge_ptr + ge_off, acc.to(ge_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_n[None, :])

    @triton.jit
    def _grad_input_kernel(
        gy_ptr, e_ptr, gx_ptr, block_q, block_col, block_lo, block_hi, entry_row, entry_column,
        n_batch, images, cols_per_image, n_in, n_out, height, n_cols, out_h, out_w, stride_w,
        BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, ENTRY_MAJOR: tl.constexpr,
        E_TRANSPOSED: tl.constexpr, WRAPPED: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        # e_ptr: E in entry order (the taps grouped by input row), as [T, C, O] if E_TRANSPOSED (o contiguous: the
        # layout tf32 tensor cores take), else [T, O, C]. Everything a step reads is addressed by the entry index
        # itself (no lookup of the tap first), so the loads of successive steps pipeline.
        # A program: grad x[b, c, q, cols] for BLOCK_C channels and the n_cols columns of input row q that one
        # block holds, over the entries e that read row q and reach these columns, k = e C_out + o:
        # E[e, o, c] grad_y[b, i_e, j, o]. A block is cols_per_image columns of `images` batch indices (narrow
        # rows: several whole rows of consecutive images fill one tile). The columns are the padded input's, or
        # (WRAPPED) the input's own, each entry's reading them around the circle: the padding's copies are summed
        # here, into [B, C, H, W] directly.
        # The programs of one block and all images run side by side: they read the same entries of E.
        n_image_blocks = tl.cdiv(n_batch, images)
        pid = tl.program_id(0) // n_image_blocks
        q = tl.load(block_q + pid)
        lane = tl.arange(0, BLOCK_Q)
        image = lane // cols_per_image
        cols = tl.load(block_col + pid) + lane % cols_per_image
        b = tl.program_id(0) % n_image_blocks * images + image
        mask_lane = (image < images) & (b < n_batch) & (cols < n_cols)
        b = b.to(tl.int64)
        k_lo = tl.load(block_lo + pid) * n_out
        k_hi = tl.load(block_hi + pid) * n_out
        offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < n_in
        gy_batch = gy_ptr + b * out_h * out_w * n_out  # [BLOCK_Q] pointers
        acc = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            if ENTRY_MAJOR:  # n_out is a multiple of BLOCK_K: the block lies within one entry
                entry = k0 // n_out
                o = ks - entry * n_out
                j, reads = _output_column(cols - tl.load(entry_column + entry), n_cols, out_w, stride_w, WRAPPED)
                mask_q = reads & mask_lane
                if E_TRANSPOSED:
                    e_off = (entry.to(tl.int64) * n_in + offs_c[:, None]) * n_out + o[None, :]
                else:
                    e_off = (entry.to(tl.int64) * n_out + o[None, :]) * n_in + offs_c[:, None]
                ev = tl.load(e_ptr + e_off, mask=mask_c[:, None], other=0.0)
                gy_off = (tl.load(entry_row + entry).to(tl.int64) * out_w + j[None, :]) * n_out + o[:, None]
                gv = tl.load(gy_batch[None, :] + gy_off, mask=mask_q[None, :], other=0.0)
            else:
                mask_k = ks < k_hi
                entry = ks // n_out
                o = ks - entry * n_out
                rel = cols[None, :] - tl.load(entry_column + entry, mask=mask_k, other=0)[:, None]
                j, reads = _output_column(rel, n_cols, out_w, stride_w, WRAPPED)
                mask_g = reads & mask_k[:, None] & mask_lane[None, :]
                if E_TRANSPOSED:
                    e_off = (entry.to(tl.int64)[None, :] * n_in + offs_c[:, None]) * n_out + o[None, :]
                else:
                    e_off = (entry.to(tl.int64)[None, :] * n_out + o[None, :]) * n_in + offs_c[:, None]
                ev = tl.load(e_ptr + e_off, mask=mask_c[:, None] & mask_k[None, :], other=0.0)
                i = tl.load(entry_row + entry, mask=mask_k, other=0).to(tl.int64)
                gv = tl.load(gy_batch[None, :] + (i[:, None] * out_w + j) * n_out + o[:, None], mask=mask_g, other=0.0)
            acc = tl.dot(ev, gv, acc, input_precision=PRECISION)
        gx_off = ((b[None, :] * n_in + offs_c[:, None]) * height + q) * n_cols + cols[None, :]
        tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_lane[None, :])


if triton is not None:

    @triton.jit
    def _tap_products_kernel(
        gy_ptr, e_ptr, p_ptr, block_row, block_k, row_ptr, tap_entry,
        n_batch, n_in, n_out, out_h, out_w,
        BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        # Input gradient for few input channels, step 1: P[e, n, c] = sum_o E[t, o, c] grad_y[b, i, j, o] for the k =
        # t C + c of one output row i and the lanes n = b W' + j, stored at the tap's entry e (input-row order).
        # grad_y is read once per block of k, not once per tap. E is [T, C, O] (row k of the product at k O).
        pid = tl.program_id(0)
        i = tl.load(block_row + pid)
        offs_k = tl.load(block_k + pid) + tl.arange(0, BLOCK_N)
        offs_n = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
        n_lanes = n_batch * out_w
        mask_k = offs_k < tl.load(row_ptr + i + 1) * n_in
        mask_n = offs_n < n_lanes
        b = (offs_n // out_w).to(tl.int64)
        gy_lane = ((b * out_h + i) * out_w + offs_n % out_w) * n_out  # [BLOCK_J]
        acc = tl.zeros((BLOCK_N, BLOCK_J), dtype=tl.float32)
        for o0 in range(0, n_out, BLOCK_K):
            offs_o = o0 + tl.arange(0, BLOCK_K)
            mask_o = offs_o < n_out
            ev = tl.load(e_ptr + offs_k.to(tl.int64)[:, None] * n_out + offs_o[None, :],
                         mask=mask_k[:, None] & mask_o[None, :], other=0.0)  # fmt: skip
            gv = tl.load(gy_ptr + gy_lane[None, :] + offs_o[:, None], mask=mask_o[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(ev, gv, acc, input_precision=PRECISION)
        t = offs_k // n_in
        entry = tl.load(tap_entry + t, mask=mask_k, other=0).to(tl.int64)
        p_off = (entry * n_lanes)[:, None] * n_in + (offs_n.to(tl.int64) * n_in)[None, :] + (offs_k - t * n_in)[:, None]
        tl.store(p_ptr + p_off, acc.to(p_ptr.dtype.element_ty), mask=mask_k[:, None] & mask_n[None, :])

    @triton.jit
    def _fold_taps_kernel(
        p_ptr, gx_ptr, block_q, block_col, block_lo, block_hi, entry_column,
        n_batch, n_in, height, n_cols, out_w, stride_w,
        BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr, WRAPPED: tl.constexpr,
    ):  # fmt: skip
        # Step 2: grad x[b, c, q, col] = sum over the entries e of input row q that reach col of
        # P[e, b W' + j, c], j = (col - column_e) / s_w (mod W if WRAPPED, as in _grad_input_kernel). A program:
        # BLOCK_Q columns of row q, one image b, BLOCK_C channels; every element written once (no atomics).
        pid = tl.program_id(0)
        q = tl.load(block_q + pid)
        cols = tl.load(block_col + pid) + tl.arange(0, BLOCK_Q)
        b = tl.program_id(1).to(tl.int64)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < n_in
        mask_cols = cols < n_cols
        n_lanes = n_batch * out_w
        acc = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
        for e in range(tl.load(block_lo + pid), tl.load(block_hi + pid)):
            j, reads = _output_column(cols - tl.load(entry_column + e), n_cols, out_w, stride_w, WRAPPED)
            mask_q = reads & mask_cols
            lane = b * out_w + j
            p_off = (e * n_lanes + lane)[None, :] * n_in + offs_c[:, None]  # e n_lanes < TAP_PRODUCTS_MAX < 2^31
            acc += tl.load(p_ptr + p_off, mask=mask_c[:, None] & mask_q[None, :], other=0.0).to(tl.float32)
        gx_off = ((b * n_in + offs_c[:, None]) * height + q) * n_cols + cols[None, :]
        tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_cols[None, :])


# Shared memory (Triton 3.6, sm_90) of the largest float32 tiles, where it decides a launch setting: the forward
# kernel's 128 x 64 outputs with 64 (t, c) per step take 147 KB at 5 pipeline stages and 98 KB at 3 (devices with less
# room per block than FORWARD_STAGES_SMEM run 3); its 128 x 128 outputs at 5 stages, and the input-gradient kernel's
# 64 x 128 outputs with 128 (o) per step, 192 KB each (only where a block has WIDE_TILE_SMEM).
FORWARD_STAGES_SMEM = 160 * 1024
WIDE_TILE_SMEM = 196 * 1024


@functools.cache
def _max_shared(device):
    """Shared memory per block on ``device``, in bytes (0 for Triton's CPU interpreter: the smaller settings)."""
    if device.type != "cuda":
        return 0
    return triton.runtime.driver.active.utils.get_device_properties(device.index)["max_shared_mem"]


def _forward_stages(device):
    return 5 if _max_shared(device) >= FORWARD_STAGES_SMEM else 3


def _launch_forward(x_cl, kernel, bias, plan, out_w, stride_w):
    batch, height, padded_w, channels = x_cl.shape
    out_channels = kernel.shape[1]
    out_h = plan.row_order.shape[0]
    y = torch.empty(batch, out_channels, out_h, out_w, device=x_cl.device, dtype=x_cl.dtype)
    # Tiles of up to 8192 outputs (at most 128 columns), 64 (t, c) per step where C_in allows (else 32: few-channel
    # inputs, conv1), 4 warps: the fastest of a sweep on an H100 over conv1, conv2 and the 64->64 cases (0.6-1.0x the
    # time of the previous 128 x 128 tiles). 5 pipeline stages where they fit (an H100 A/B against 3 on conv1, conv2
    # and the 64->64 cases: 0.6-1.0x the time, none slower, the 64x128 and bfloat16 ones gaining most). At 5 stages,
    # 128 x 128 tiles where they fit (C_out >= 128; H100 sweep on conv2, 2026-11-24: fp32 0.31 -> 0.21 ms at 64x128,
    # 0.85 -> 0.56 ms at 128x256; bf16 0.17 -> 0.14 and 0.49 -> 0.40 ms).
    block_o = _block(out_channels, 128)
    largest_tile = 16384 if _max_shared(x_cl.device) >= WIDE_TILE_SMEM else 8192
    block_j = _block(batch * out_w, min(128, largest_tile // block_o))
    block_k = 64 if channels % 64 == 0 else 32
    grid = (out_h * triton.cdiv(batch * out_w, block_j), triton.cdiv(out_channels, block_o))
    _forward_kernel[grid](
        x_cl, kernel, kernel if bias is None else bias, y, plan.row_ptr, plan.row_order, plan.tap_base,
        batch, channels, out_channels, height, padded_w, out_h, out_w, stride_w,
        BLOCK_O=block_o, BLOCK_J=block_j, BLOCK_K=block_k, TAP_MAJOR=channels % block_k == 0, HAS_BIAS=bias is not None,
        PRECISION=_precision(x_cl.dtype), num_warps=4, num_stages=_forward_stages(x_cl.device),
    )  # fmt: skip
    return y


def _column_block(n_cols, batch, prefer_wide=False):
    """``(BLOCK_Q, images)`` for the input-gradient kernel: the tile width, and how many whole rows of consecutive
    images one tile holds (1: the row is cut into blocks), whichever wastes the fewest lanes. On a tie, 128 for rows
    of at least 256 columns or if ``prefer_wide``, and 64 otherwise (an H100 sweep of the 64->64 r=3 cases, 8 warps,
    float32: 64 takes 0.85x the time of 128 at 128 columns, 128 at most 0.92x that of 64 at 256)."""
    best = None
    for block_q in (128, 64) if n_cols >= 256 or prefer_wide else (64, 128):
        images = min(batch, block_q // n_cols) if n_cols <= block_q // 2 else 1
        used = images * n_cols
        waste = triton.cdiv(used, block_q) * block_q / used
        if best is None or waste < best[0] - 1e-9:
            best = (waste, block_q, images)
    return best[1], best[2]


def _k_major_backward(dtype):
    """Whether the backward kernels take the operands laid out with the reduction axis contiguous (one extra copy of
    x and of E): tf32 tensor-core products need it, 16-bit ones take either layout."""
    return dtype == torch.float32


def _launch_grad_kernel(x_op, grad_y, plan, kernel_shape, stride_w, x_nchw):
    """``x_op``: the padded input as ``[B, C, H, Wp]`` (``x_nchw``) or ``[B, H, Wp, C]``, contiguous."""
    if x_nchw:
        batch, channels, height, padded_w = x_op.shape
    else:
        batch, height, padded_w, channels = x_op.shape
    out_channels = kernel_shape[1]
    out_h, out_w = grad_y.shape[2:]
    grad_kernel = torch.empty(kernel_shape, device=x_op.device, dtype=x_op.dtype)
    # Up to 128 output channels, 32 (fp32) / 64 (16-bit) columns per step. With at least 64 input channels: 128 k per
    # program and 4 warps (an H100 sweep over conv2 and the 64->64 cases, once the k blocks were known to start at a
    # multiple of 16: 0.78-0.88x the time of 64 k in float32, 0.8x on conv2 in bfloat16, whose 64->64 cases had 128 k
    # already). Few input channels (conv1) keep the earlier sweep's 64 k, with 8 warps on 128 output channels.
    block_o = _block(out_channels, 128)
    block_n = 128 if channels >= 64 else 64
    block_row, block_k = _kernel_grad_blocks(plan, channels, block_n)
    grid = (len(block_row), triton.cdiv(out_channels, block_o))
    _grad_kernel_kernel[grid](
        x_op, grad_y, grad_kernel, block_row, block_k, plan.row_ptr, plan.tap_base,
        batch, channels, out_channels, height, padded_w, out_h, out_w, stride_w,
        BLOCK_O=block_o, BLOCK_N=block_n, BLOCK_J=_block(out_w, 32 if x_op.dtype == torch.float32 else 64),
        CHANNELS_16=channels % 16 == 0, X_NCHW=x_nchw, PRECISION=_precision(x_op.dtype),
        num_warps=8 if block_o == 128 and block_n == 64 else 4, num_stages=3,
    )  # fmt: skip
    return grad_kernel


def _launch_grad_input(grad_y_cl, kernel, plan, grad_x, stride_w, wrapped):
    """Writes the input's gradient into ``grad_x`` (``[B, C, H, W]`` contiguous, any float dtype).

    ``grad_y_cl``: ``[B, H', W', O]`` contiguous; ``kernel``: E in entry order (``_effective_kernel(...,
    entry_order=True)``) as ``[T, C, O]`` where ``_k_major_backward`` (fp32), else as ``[T, O, C]``. ``wrapped``: the
    forward pass padded the input around the sphere itself (``W`` = the unpadded width; the padding's copies are
    summed into their columns); otherwise the input came padded (``W`` = ``plan.padded_w``)."""
    batch, channels, height, n_cols = grad_x.shape
    out_h, out_w, out_channels = grad_y_cl.shape[1:]
    dtype = grad_y_cl.dtype
    # 64 (o) per step in both dtypes: one entry per step when C_out is a multiple of 64 (fp32 too, unlike the
    # forward's 32: conv1 128x256 B=8 3.4 -> 2.6 ms, 64->64 r=3 3.5 -> 3.0 ms on an H100). 8 warps in float32 and
    # on tiles of 128 columns (H100 sweep, conv2 and the 64->64 r=3 cases: 0.86-0.91x the time of 4).
    # When C_out is a multiple of 128, one entry per step of 128 (o), 8 warps, and in float32 tiles of 128 columns
    # where they fit in shared memory (H100 sweeps on conv2, 2026-11-24: bf16 0.28 -> 0.24 ms at 64x128, 0.94-0.98 ->
    # 0.75-0.76 ms at 128x256; fp32 1.48-1.55 -> 1.34-1.38 ms at 128x256, and 0.41-0.43 -> 0.44-0.45 ms at 64x128,
    # whose rows of 64 columns keep the previous tiles).
    block_c = _block(channels, 64)
    block_k = 128 if out_channels % 128 == 0 else 64
    wide = dtype == torch.float32 and block_k == 128
    if wide and (n_cols < 128 or _max_shared(grad_x.device) < WIDE_TILE_SMEM):
        wide, block_k = False, 64  # float32 gains from 128 (o) per step only on tiles of 128 columns of one image
    block_q, images = _column_block(n_cols, batch, prefer_wide=wide)
    num_warps = 8 if dtype == torch.float32 or block_q == 128 or block_k == 128 else 4
    cols_per_image = n_cols if images > 1 else block_q
    blocks = _input_grad_blocks(plan, height, out_w, stride_w, cols_per_image, wrapped)
    grid = (len(blocks[0]) * triton.cdiv(batch, images), triton.cdiv(channels, block_c))
    _grad_input_kernel[grid](
        grad_y_cl, kernel, grad_x, *blocks, plan.entry_row, plan.input_columns(wrapped),
        batch, images, cols_per_image, channels, out_channels, height, n_cols, out_h, out_w, stride_w,
        BLOCK_C=block_c, BLOCK_Q=block_q, BLOCK_K=block_k, ENTRY_MAJOR=out_channels % block_k == 0,
        E_TRANSPOSED=_k_major_backward(dtype), WRAPPED=wrapped, PRECISION=_precision(dtype),
        num_warps=num_warps, num_stages=3,
    )  # fmt: skip


# The input gradient goes through the tap products P (``_tap_products_kernel`` then ``_fold_taps_kernel``) when the
# input has at most 1/8 as many channels as the output (a network's first layer): the per-entry kernel reads C_out
# values of grad_y per tap and input pixel, P holds C_in per tap and output pixel. P is at most TAP_PRODUCTS_MAX
# elements, else the per-entry kernel runs.
TAP_PRODUCTS_RATIO, TAP_PRODUCTS_MAX = 8, 2**28


def _uses_tap_products(taps, batch, out_w, channels, out_channels):
    return TAP_PRODUCTS_RATIO * channels <= out_channels and taps * batch * out_w * channels <= TAP_PRODUCTS_MAX


def _launch_grad_input_by_taps(grad_y_cl, kernel, plan, grad_x, stride_w, wrapped):
    """The input gradient through the tap products: ``kernel`` is E as ``[T, C, O]`` (tap order); otherwise as
    ``_launch_grad_input``."""
    batch, channels, height, n_cols = grad_x.shape
    out_h, out_w, out_channels = grad_y_cl.shape[1:]
    dtype = grad_y_cl.dtype
    taps = kernel.shape[0]
    products = torch.empty(taps, batch * out_w, channels, device=grad_y_cl.device, dtype=dtype)
    block_n, block_j = 128, 128
    block_row, block_k = _kernel_grad_blocks(plan, channels, block_n)
    grid = (len(block_row), triton.cdiv(batch * out_w, block_j))
    _tap_products_kernel[grid](
        grad_y_cl, kernel, products, block_row, block_k, plan.row_ptr, plan.tap_entry,
        batch, channels, out_channels, out_h, out_w,
        BLOCK_N=block_n, BLOCK_J=block_j, BLOCK_K=32 if dtype == torch.float32 else 64, PRECISION=_precision(dtype),
        num_warps=8, num_stages=3,
    )  # fmt: skip
    block_c, block_q = min(16, triton.next_power_of_2(channels)), 128
    blocks = _input_grad_blocks(plan, height, out_w, stride_w, block_q, wrapped)
    grid = (len(blocks[0]), batch, triton.cdiv(channels, block_c))
    _fold_taps_kernel[grid](
        products, grad_x, *blocks, plan.input_columns(wrapped),
        batch, channels, height, n_cols, out_w, stride_w,
        BLOCK_C=block_c, BLOCK_Q=block_q, WRAPPED=wrapped, num_warps=4,
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _nodes(plan, dtype, entry_order=False):
    return (plan.entry_nodes if entry_order else plan.nodes).to(dtype)


def _effective_kernel(plan, weight, transposed=False, entry_order=False):
    """E[t, o, c] = sum_k nodes[t, k] weight[o, c, k] as ``[T, O, C]`` (``transposed``: ``[T, C, O]``; ``entry_order``:
    the taps in the input-gradient kernel's order, ``plan.in_taps``): one GEMM."""
    out_channels, channels = weight.shape[:2]
    if transposed:
        weight = weight.transpose(0, 1)
    kernel = torch.mm(_nodes(plan, weight.dtype, entry_order), weight.reshape(out_channels * channels, -1).t())
    return kernel.view(-1, *weight.shape[:2])


class _CrownGather(torch.autograd.Function):
    """``y = crown_sum(pad(x), E(weight)) + bias`` with the three kernels above, in ``weight``'s dtype.

    ``pad`` is ``(pad_left, pad_right)`` around the sphere (``wrap_pad``), or ``(0, 0)`` for an input padded already.
    For the backward pass E is rebuilt (one GEMM) rather than kept, and so is the padded copy of ``x`` (one pass),
    where it could be larger than ``x``: the forward's channels-last copy is kept instead of ``x`` only when the
    weight-gradient kernel reads that layout (16-bit) and it takes no more bytes than ``x`` (a float32 input under
    autocast). ``bias`` (any float dtype, or None) is added by the forward kernel in float32, so that the output stays
    in the compute dtype, as ``nn.Conv2d``'s does under autocast; its gradient comes back in its own dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan, out_w, stride_w, pad):
        ctx.plan, ctx.stride_w, ctx.pad = plan, stride_w, pad
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        x_cl = wrap_pad(x, *pad, weight.dtype, channels_last=True)
        ctx.keeps_x_cl = (
            ctx.needs_input_grad[1]
            and not _k_major_backward(weight.dtype)
            and x_cl.numel() * x_cl.element_size() <= x.numel() * x.element_size()
        )
        ctx.save_for_backward(x_cl if ctx.keeps_x_cl else x, weight)
        return _launch_forward(x_cl, _effective_kernel(plan, weight), bias, plan, out_w, stride_w)

    @staticmethod
    def backward(ctx, grad_y):
        saved, weight = ctx.saved_tensors
        plan, pad, dtype, x_shape = ctx.plan, ctx.pad, weight.dtype, ctx.x_shape
        grad_y = grad_y.to(dtype)
        k_major = _k_major_backward(dtype)
        taps = plan.tap_row.shape[0]
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_y_cl = wrap_pad(grad_y, 0, 0, dtype, channels_last=True)
            # Written as the input lies, the padding's copies summed in (no padded gradient, no fold pass).
            grad_x = torch.empty(x_shape, device=weight.device, dtype=ctx.x_dtype)
            wrapped = any(pad)
            if _uses_tap_products(taps, x_shape[0], grad_y.shape[3], x_shape[1], weight.shape[0]):
                kernel = _effective_kernel(plan, weight, transposed=True)
                _launch_grad_input_by_taps(grad_y_cl, kernel, plan, grad_x, ctx.stride_w, wrapped)
            else:
                kernel = _effective_kernel(plan, weight, transposed=k_major, entry_order=True)
                _launch_grad_input(grad_y_cl, kernel, plan, grad_x, ctx.stride_w, wrapped)
        if ctx.needs_input_grad[1]:
            x_op = saved if ctx.keeps_x_cl else wrap_pad(saved, *pad, dtype, channels_last=not k_major)
            grad_kernel = _launch_grad_kernel(
                x_op, grad_y.contiguous(), plan, (taps, *weight.shape[:2]), ctx.stride_w, x_nchw=k_major
            )
            # weight[o, c, k] enters E through nodes[t, k]: grad weight = grad_E^T nodes, one GEMM.
            grad_weight = torch.mm(grad_kernel.view(taps, -1).t(), _nodes(plan, dtype)).view(weight.shape)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_y.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None


def crown_gather(x, weight, bias, plan, out_w, stride_w, pad):
    """The crown convolution of ``x`` by the Triton kernels.

    Args:
        x: ``[B, C_in, H, W]`` on CUDA, ``B >= 1``, any strides; padded around the sphere by
            ``pad = (plan.window.pad_left, plan.window.pad_right)`` here, or padded already (``pad = (0, 0)``).
        weight: ``[C_out, C_in, kh, kw]``.
        bias: ``[C_out]`` or None.
        plan: ``triton_plan`` of the configuration.
        out_w, stride_w: output width and column stride.

    Returns:
        ``[B, C_out, H', W']`` in the compute dtype (the autocast dtype under autocast, else the input's).
    """
    autocast = torch.is_autocast_enabled(x.device.type)
    dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
    out_channels, channels = weight.shape[:2]
    taps = plan.tap_row.shape[0]
    if taps * max(channels, out_channels) >= 2**31:
        raise ValueError(f"{taps} crown taps with {channels} -> {out_channels} channels overflow the kernels' int32")
    if not autocast:  # entering a disabled autocast region costs host time too
        return _CrownGather.apply(x, weight.to(dtype), bias, plan, out_w, stride_w, pad)
    with torch.autocast(x.device.type, enabled=False):
        return _CrownGather.apply(x, weight.to(dtype), bias, plan, out_w, stride_w, pad)

"""Triton kernels of the gather formulation of ``spherical_conv``: forward, weight gradient, input gradient.

Only ``@triton.jit`` code: the launchers are in ``sconv.functional.conv_gather``. This module imports triton:
import it only where triton is installed.
"""

import triton
import triton.language as tl

# Layouts: x_cl [B, H, Wp, C] (channels last, width-padded), E [T, O, C] (k = t C + c), y and grad_y [B, O, H', W'],
# grad_y_cl [B, H', W', O]. Channels last makes every tile's reduction axis contiguous in memory.


@triton.jit
def output_column(rel, n_cols, out_w, stride_w, WRAPPED: tl.constexpr):
    """``(j, reads)``: for a column ``rel`` columns right of where an entry reads output column 0, the output
    column j whose tap reads it, and whether one does (mod ``n_cols`` = W around the sphere if WRAPPED)."""
    if WRAPPED:
        rel = tl.where(rel < 0, rel + n_cols, rel)
    j = rel // stride_w
    return j, (rel >= 0) & (rel - j * stride_w == 0) & (j < out_w)


@triton.jit
def forward_kernel(
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
def grad_kernel_kernel(
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
def grad_input_kernel(
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
            j, reads = output_column(cols - tl.load(entry_column + entry), n_cols, out_w, stride_w, WRAPPED)
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
            j, reads = output_column(rel, n_cols, out_w, stride_w, WRAPPED)
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


@triton.jit
def tap_products_kernel(
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
def fold_taps_kernel(
    p_ptr, gx_ptr, block_q, block_col, block_lo, block_hi, entry_column,
    n_batch, n_in, height, n_cols, out_w, stride_w,
    BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr, WRAPPED: tl.constexpr,
):  # fmt: skip
    # Step 2: grad x[b, c, q, col] = sum over the entries e of input row q that reach col of
    # P[e, b W' + j, c], j = (col - column_e) / s_w (mod W if WRAPPED, as in grad_input_kernel). A program:
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
        j, reads = output_column(cols - tl.load(entry_column + e), n_cols, out_w, stride_w, WRAPPED)
        mask_q = reads & mask_cols
        lane = b * out_w + j
        p_off = (e * n_lanes + lane)[None, :] * n_in + offs_c[:, None]  # e n_lanes < TAP_PRODUCTS_MAX < 2^31
        acc += tl.load(p_ptr + p_off, mask=mask_c[:, None] & mask_q[None, :], other=0.0).to(tl.float32)
    gx_off = ((b * n_in + offs_c[:, None]) * height + q) * n_cols + cols[None, :]
    tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_cols[None, :])

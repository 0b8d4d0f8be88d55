"""Triton kernel of the sparse formulations' crown sum: a CSR matrix's rows times a batch of dense matrices.

Only ``@triton.jit`` code: the launchers are in ``sconv.functional.conv_sparse``. This module imports triton:
import it only where triton is installed.
"""

import triton
import triton.language as tl


@triton.jit
def csr_rows_kernel(
    crow_ptr, col_ptr, val_ptr, d_ptr, out_ptr, rows_in, rows_out, n_cols, n_lanes,
    BLOCK_E: tl.constexpr, BLOCK_M: tl.constexpr, VEC: tl.constexpr,
):  # fmt: skip
    # A program: row r of S, lanes m of the flattened (image b, channel n) axis, m = b N + n. VEC (a power of two
    # dividing N) consecutive lanes are consecutive channels of one image: the hints let them load as vectors.
    r = tl.program_id(0)
    m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = m < n_lanes
    b = (m // n_cols).to(tl.int64)
    n = m % n_cols
    d_lane = b * rows_in * n_cols + n
    out_lane = b * rows_out * n_cols + n + r.to(tl.int64) * n_cols
    lo = tl.load(crow_ptr + r)
    hi = tl.load(crow_ptr + r + 1)
    acc = tl.zeros((BLOCK_E, BLOCK_M), dtype=tl.float32)  # reduced over its first axis once, at the end
    for e0 in range(lo, hi, BLOCK_E):
        es = e0 + tl.arange(0, BLOCK_E)
        mask_e = es < hi
        col = tl.load(col_ptr + es, mask=mask_e, other=0).to(tl.int64)
        val = tl.load(val_ptr + es, mask=mask_e, other=0.0).to(tl.float32)
        d_off = tl.max_contiguous(tl.multiple_of(col[:, None] * n_cols + d_lane[None, :], [1, VEC]), [1, VEC])
        dv = tl.load(d_ptr + d_off, mask=mask_e[:, None] & mask_m[None, :], other=0.0)
        acc += val[:, None] * dv.to(tl.float32)
    total = tl.sum(acc, axis=0)
    out_lane = tl.max_contiguous(tl.multiple_of(out_lane, VEC), VEC)
    tl.store(out_ptr + out_lane, total.to(out_ptr.dtype.element_ty), mask=mask_m)

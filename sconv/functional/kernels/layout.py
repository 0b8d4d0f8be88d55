"""Triton kernels that move activations between the layouts the crown kernels read (``wrap_pad``, ``wrap_fold``).

Only ``@triton.jit`` code: the launchers are in ``sconv.functional.conv_layout``. This module imports triton:
import it only where triton is installed.
"""

import triton
import triton.language as tl


@triton.jit
def tile(n_c, height, width, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's image b, row h, BLOCK_W (unpadded) columns, BLOCK_C channels, and which of them exist."""
    pid = tl.program_id(0)
    offs_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (offs_c < n_c)[:, None] & (offs_w < width)[None, :]
    return (pid // height).to(tl.int64), pid % height, offs_w, offs_c, mask


@triton.jit
def wrap_pad_kernel(
    x_ptr, out_ptr, n_c, height, width, padded_w, pad_left, m_lo, m_hi,
    x_sb, x_sc, x_sh, x_sw, o_sb, o_sc, o_sh, o_sw,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # A program: input row (b, h), BLOCK_W input columns, BLOCK_C channels; each input column is written to
    # every padded column w + pad_left + m W (m_lo <= m <= m_hi) that lies in [0, padded_w).
    b, h, offs_w, offs_c, mask = tile(n_c, height, width, BLOCK_C, BLOCK_W)
    x_off = b * x_sb + h * x_sh + offs_c.to(tl.int64)[:, None] * x_sc + offs_w[None, :] * x_sw
    value = tl.load(x_ptr + x_off, mask=mask).to(out_ptr.dtype.element_ty)
    out_row = out_ptr + b * o_sb + h * o_sh + offs_c.to(tl.int64)[:, None] * o_sc
    for m in range(m_lo, m_hi + 1):
        dst = offs_w + pad_left + m * width
        inside = (dst >= 0) & (dst < padded_w)
        tl.store(out_row + dst.to(tl.int64)[None, :] * o_sw, value, mask=mask & inside[None, :])


@triton.jit
def wrap_fold_kernel(
    g_ptr, b_ptr, out_ptr, n_c, height, width, padded_w, pad_left, m_lo, m_hi,
    BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    # A program: output row (b, h), BLOCK_W output columns, BLOCK_C channels, summing the padded copies (and
    # adding bias[c]).
    b, h, offs_w, offs_c, mask = tile(n_c, height, width, BLOCK_C, BLOCK_W)
    g_row = g_ptr + (b * height + h) * padded_w * n_c + offs_c[:, None]
    acc = tl.zeros((BLOCK_C, BLOCK_W), dtype=tl.float32)
    for m in range(m_lo, m_hi + 1):
        src = offs_w + pad_left + m * width
        inside = (src >= 0) & (src < padded_w)
        acc += tl.load(g_row + src.to(tl.int64)[None, :] * n_c, mask=mask & inside[None, :], other=0.0)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=offs_c < n_c, other=0.0).to(tl.float32)[:, None]
    out_off = ((b * n_c + offs_c[:, None]) * height + h) * width + offs_w[None, :]
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=mask)

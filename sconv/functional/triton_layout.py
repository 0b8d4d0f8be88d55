"""Triton kernels that move activations between the layouts the crown kernels read, in one pass each.

- ``wrap_pad``: ``x [B, C, H, W]`` (any strides) to its width-padded copy ``[B, C, H, Wp]`` or, channels last,
  ``[B, H, Wp, C]``, in a given dtype. The padding is the sphere's: padded column ``p`` holds input column
  ``(p - pad_left) mod W``. With no padding it is a layout change (and cast) alone.
- ``wrap_fold``: its adjoint, from a channels-last padded gradient ``[B, H, Wp, C]`` to ``[B, C, H, W]``: input column
  ``w`` gets the sum over every padded column that copied it. Deterministic (no atomics). With no padding it is the
  layout change back, and adds the sparse formulations' bias to their output on the way.

Each program reads a ``[C block, W block]`` tile along the input's contiguous axis and writes it along the output's,
so both sides are coalesced: what ``F.pad`` followed by ``permute().contiguous()`` (and their backward) does in
several strided passes. CUDA only; the PyTorch paths do not use them.
"""

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None

__all__ = ["wrap_pad", "wrap_fold"]

BLOCK_C, BLOCK_W = 32, 64

if triton is not None:

    @triton.jit
    def _tile(n_c, height, width, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr):
        """This program's image b, row h, BLOCK_W (unpadded) columns, BLOCK_C channels, and which of them exist."""
        pid = tl.program_id(0)
        offs_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = (offs_c < n_c)[:, None] & (offs_w < width)[None, :]
        return (pid // height).to(tl.int64), pid % height, offs_w, offs_c, mask

    @triton.jit
    def _wrap_pad_kernel(
        x_ptr, out_ptr, n_c, height, width, padded_w, pad_left, m_lo, m_hi,
        x_sb, x_sc, x_sh, x_sw, o_sb, o_sc, o_sh, o_sw,
        BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
    ):  # fmt: skip
        # A program: input row (b, h), BLOCK_W input columns, BLOCK_C channels; each input column is written to
        # every padded column w + pad_left + m W (m_lo <= m <= m_hi) that lies in [0, padded_w).
        b, h, offs_w, offs_c, mask = _tile(n_c, height, width, BLOCK_C, BLOCK_W)
        x_off = b * x_sb + h * x_sh + offs_c.to(tl.int64)[:, None] * x_sc + offs_w[None, :] * x_sw
        value = tl.load(x_ptr + x_off, mask=mask).to(out_ptr.dtype.element_ty)
        out_row = out_ptr + b * o_sb + h * o_sh + offs_c.to(tl.int64)[:, None] * o_sc
        for m in range(m_lo, m_hi + 1):
            dst = offs_w + pad_left + m * width
            inside = (dst >= 0) & (dst < padded_w)
            tl.store(out_row + dst.to(tl.int64)[None, :] * o_sw, value, mask=mask & inside[None, :])

    @triton.jit
    def _wrap_fold_kernel(
        g_ptr, b_ptr, out_ptr, n_c, height, width, padded_w, pad_left, m_lo, m_hi,
        BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr, HAS_BIAS: tl.constexpr,
    ):  # fmt: skip
        # A program: output row (b, h), BLOCK_W output columns, BLOCK_C channels, summing the padded copies (and
        # adding bias[c]).
        b, h, offs_w, offs_c, mask = _tile(n_c, height, width, BLOCK_C, BLOCK_W)
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


def _copies(width, pad_left, padded_w):
    """``(m_lo, m_hi)``: the m for which some input column w lands at padded column w + pad_left + m W."""
    return -pad_left // width, (padded_w - pad_left - 1) // width


def _grid(batch, height, width, channels):
    return (batch * height, triton.cdiv(width, BLOCK_W), triton.cdiv(channels, BLOCK_C))


def wrap_pad(x, pad_left, pad_right, dtype, channels_last):
    """``x [B, C, H, W]`` padded around the sphere's longitude to ``W + pad_left + pad_right`` columns, in ``dtype``.

    Returns a contiguous ``[B, H, Wp, C]`` (``channels_last``) or ``[B, C, H, Wp]``.
    """
    batch, channels, height, width = x.shape
    padded_w = width + pad_left + pad_right
    if channels_last:
        out = torch.empty(batch, height, padded_w, channels, device=x.device, dtype=dtype)
        o_sb, o_sh, o_sw, o_sc = out.stride()
    else:
        out = torch.empty(batch, channels, height, padded_w, device=x.device, dtype=dtype)
        o_sb, o_sc, o_sh, o_sw = out.stride()
    if out.numel() == 0:
        return out
    m_lo, m_hi = _copies(width, pad_left, padded_w)
    _wrap_pad_kernel[_grid(batch, height, width, channels)](
        x, out, channels, height, width, padded_w, pad_left, m_lo, m_hi, *x.stride(), o_sb, o_sc, o_sh, o_sw,
        BLOCK_C=BLOCK_C, BLOCK_W=BLOCK_W, num_warps=4,
    )  # fmt: skip
    return out


def wrap_fold(grad, pad_left, width, dtype, bias=None):
    """The adjoint of ``wrap_pad(..., channels_last=True)``: ``grad [B, H, Wp, C]`` (contiguous) to ``[B, C, H, W]``,
    plus ``bias [C]`` (summed in float32) when given."""
    batch, height, padded_w, channels = grad.shape
    out = torch.empty(batch, channels, height, width, device=grad.device, dtype=dtype)
    if out.numel() == 0:
        return out
    m_lo, m_hi = _copies(width, pad_left, padded_w)
    _wrap_fold_kernel[_grid(batch, height, width, channels)](
        grad, grad if bias is None else bias, out, channels, height, width, padded_w, pad_left, m_lo, m_hi,
        BLOCK_C=BLOCK_C, BLOCK_W=BLOCK_W, HAS_BIAS=bias is not None, num_warps=4,
    )  # fmt: skip
    return out

"""Layout passes shared by the formulations of ``spherical_conv``, and whether its Triton (CUDA) versions can run.

- ``pad_width``: the PyTorch width padding of the CPU paths (and of the CUDA paths for the padding modes other than
  ``'sphere'``); ``with_bias``: adding the bias in the output's dtype.
- ``wrap_pad`` (Triton): ``x [B, C, H, W]`` (any strides) to its width-padded copy ``[B, C, H, Wp]`` or, channels last,
  ``[B, H, Wp, C]``, in a given dtype. The padding is the sphere's: padded column ``p`` holds input column
  ``(p - pad_left) mod W``. With no padding it is a layout change (and cast) alone.
- ``wrap_fold`` (Triton): its adjoint, from a channels-last padded gradient ``[B, H, Wp, C]`` to ``[B, C, H, W]``:
  input column ``w`` gets the sum over every padded column that copied it. Deterministic (no atomics). With no padding
  it is the layout change back, and adds the sparse formulations' bias to their output on the way.

Each program of the Triton passes reads a ``[C block, W block]`` tile along the input's contiguous axis and writes it
along the output's, so both sides are coalesced: what ``F.pad`` followed by ``permute().contiguous()`` (and their
backward) does in several strided passes. Their kernels are in ``sconv.functional.kernels.layout``.
"""

import torch
import torch.nn.functional as F

try:
    import triton
except ImportError:  # CPU-only installs: the PyTorch paths are used
    triton = None

if triton is not None:
    from sconv.functional.kernels.layout import wrap_fold_kernel, wrap_pad_kernel

__all__ = ["triton_available", "pad_width", "with_bias", "wrap_pad", "wrap_fold"]

TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Tile of the layout kernels: channels x (unpadded) columns.
BLOCK_C, BLOCK_W = 32, 64


def triton_available(device, dtype):
    """Whether the Triton versions of the formulations can run for tensors on ``device`` in ``dtype`` (CUDA with
    Triton, not float64)."""
    return triton is not None and torch.device(device).type == "cuda" and dtype in TRITON_DTYPES


def pad_width(input, left, right, padding_mode):
    """``input [B, C, H, W]`` padded by ``left`` / ``right`` columns in ``padding_mode`` (checked)."""
    if left == 0 and right == 0:
        return input
    if padding_mode == "sphere":
        return F.pad(input, (left, right, 0, 0), mode="circular")
    if padding_mode in ("reflect", "replicate"):
        return F.pad(input, (left, right, 0, 0), mode=padding_mode)
    value = 0.0 if padding_mode == "zeros" else padding_mode
    return F.pad(input, (left, right, 0, 0), mode="constant", value=value)


def with_bias(out, bias):
    """``out [B, O, H', W']`` plus ``bias [O]`` (or None) in the output's dtype, as ``nn.Conv2d`` under autocast: a
    float32 bias must not promote a 16-bit output."""
    return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


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
    wrap_pad_kernel[_grid(batch, height, width, channels)](
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
    wrap_fold_kernel[_grid(batch, height, width, channels)](
        grad, grad if bias is None else bias, out, channels, height, width, padded_w, pad_left, m_lo, m_hi,
        BLOCK_C=BLOCK_C, BLOCK_W=BLOCK_W, HAS_BIAS=bias is not None, num_warps=4,
    )  # fmt: skip
    return out

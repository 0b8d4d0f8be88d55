"""Spherical crown convolution (spec: "Spherical crown convolution").

The math: for output pixel p and the input pixel centres q in its crown N(p) (angular distance <= r),

    y[n, o, p] = bias[o] + sum_c sum_{q in N(p)} K_oc(alpha_pq, beta_pq) x[n, c, q] w_q / sum_{q in N(p)} w_q

with K the bilinear interpolation of ``weight[o, c]`` over ``kh x kw`` nodes in (alpha, beta), ``w_q = sin(theta_q)``.

The fast paths, all built on the geometry that ``sconv.functional.crown`` computes once per configuration; which one
runs is chosen per call by an operation count (``_choose_path``), since their costs differ by orders of magnitude
between a small crown with many kernel nodes and a large crown with few:

- ``gather``: per group of rows with similar tap counts, one ``index_select`` gathers the input under every tap from
  the width-padded input (``[B, C, R, T, W']``), each row's effective kernel ``E[o, c, t]`` is built from the weight
  by a 4-corner gather, and one batched GEMM over the rows does the rest. Costs ``B C O`` per tap, like a planar
  convolution. On CUDA (float32, bfloat16, float16) the same formulation runs as Triton kernels that read the padded
  input in place, with no gathered copy (``sconv.functional.sconv_triton``).
- ``mix_first``: a 1x1 GEMM expands the input onto the ``kh kw`` nodes (``U[k, q] = sum_c W[o, c, k] x[c, q]``), then
  one sparse matrix sums each crown. Wins for large crowns (many taps, few nodes) and ``C_out <= C_in``.
- ``project_first``: the sparse matrix first projects the input onto the nodes (``Z[k, p]``), then a GEMM mixes the
  channels. Wins for large crowns and ``C_in < C_out``.

No Python loop runs over rows or pixels, only over a handful of row groups.
"""

import functools
import math
import numbers

import torch
import torch.nn.functional as F

from sconv.functional.common import check_input, pair
from sconv.functional.crown import conv_plan, crown_taps, padded_taps, sparse_plan
from sconv.functional.sconv_triton import crown_gather, triton_available, triton_plan

__all__ = ["spherical_conv", "check_padding_mode", "check_kernel_rad"]

PADDING_MODES = ("sphere", "zeros", "reflect", "replicate")


def check_padding_mode(padding_mode):
    """``padding_mode`` as validated: one of PADDING_MODES or a real number (constant padding)."""
    if isinstance(padding_mode, str):
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES} or a number, got {padding_mode!r}")
        return padding_mode
    if isinstance(padding_mode, numbers.Real) and not isinstance(padding_mode, bool):
        if not math.isfinite(padding_mode):
            raise ValueError(f"padding_mode as a constant must be finite, got {padding_mode!r}")
        return float(padding_mode)
    raise TypeError(f"padding_mode must be one of {PADDING_MODES} or a number, got {type(padding_mode).__name__}")


def check_kernel_rad(kernel_rad):
    """``kernel_rad`` as a float in (0, pi]."""
    if isinstance(kernel_rad, torch.Tensor) and kernel_rad.numel() == 1:
        kernel_rad = kernel_rad.item()
    if not isinstance(kernel_rad, numbers.Real) or isinstance(kernel_rad, bool):
        raise TypeError(f"kernel_rad must be a number of radians in (0, pi], got {type(kernel_rad).__name__}")
    kernel_rad = float(kernel_rad)
    # A radius given as math.pi in another precision may round just above pi: accept it as pi.
    if not (0 < kernel_rad <= math.pi * (1 + 1e-12)):
        raise ValueError(f"kernel_rad must be in (0, pi], got {kernel_rad!r}")
    return min(kernel_rad, math.pi)


def _pad_width(input, left, right, padding_mode):
    if left == 0 and right == 0:
        return input
    if padding_mode == "sphere":
        return F.pad(input, (left, right, 0, 0), mode="circular")
    if padding_mode in ("reflect", "replicate"):
        return F.pad(input, (left, right, 0, 0), mode=padding_mode)
    value = 0.0 if padding_mode == "zeros" else padding_mode
    return F.pad(input, (left, right, 0, 0), mode="constant", value=value)


# Relative cost of one memory-bound gathered or sparse multiply-add against one multiply-add inside a dense GEMM.
GATHER_COST = 4
SPARSE_COST = 4
# On CUDA: the Triton gather kernels' multiply-add against cuBLAS's, and cuSPARSE's sparse one (measured on an H100,
# benchmarks/RESULTS.md).
TRITON_COST = 2
CUDA_SPARSE_COST = 64
# Largest effective kernel E [C_out, taps, C_in] the Triton path builds, and largest sparse matrix (elements).
TRITON_MAX_KERNEL = 2**30
MAX_NONZEROS = 2**27


@torch.compiler.disable  # plain Python over cached geometry: under torch.compile, run it as is, not traced
@functools.lru_cache(maxsize=1024)
def _choose_path(batch, channels, out_channels, height, width, kernel_rad, stride, kernel_size, fast_gather=False):
    """The cheapest of the three formulations for this call, by counting multiply-adds (see the module docstring).

    ``fast_gather``: the gather path would run as the Triton kernels (CUDA), whose cost is counted apart.
    """
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    out_h, out_w = geom.out_size
    nodes = kernel_size[0] * kernel_size[1]
    nonzeros = 4 * len(geom.in_row) * out_w
    batch = max(batch, 1)
    if fast_gather:
        taps = len(geom.in_row)
        # tl.dot works on tiles of at least 16 output channels; E is built by one GEMM over the kernel nodes.
        rounded_out = -(-out_channels // 16) * 16
        gather = batch * out_w * taps * channels * rounded_out + taps * nodes * channels * out_channels
        cost = {
            "gather": TRITON_COST * gather,
            "mix_first": batch * height * width * channels * out_channels * nodes
            + CUDA_SPARSE_COST * nonzeros * batch * out_channels,
            "project_first": batch * out_h * out_w * channels * nodes * out_channels
            + CUDA_SPARSE_COST * nonzeros * batch * channels,
        }
        if nonzeros > MAX_NONZEROS:
            return "gather"
        if taps * channels * out_channels > TRITON_MAX_KERNEL:
            cost["gather"] = float("inf")
        return min(cost, key=cost.get)
    taps = padded_taps(height, width, kernel_rad, stride, kernel_size)
    cost = {
        "gather": batch * channels * taps * out_w * (out_channels + GATHER_COST)
        + GATHER_COST * 4 * out_channels * channels * taps,
        "mix_first": batch * height * width * channels * out_channels * nodes
        + SPARSE_COST * nonzeros * batch * out_channels,
        "project_first": batch * out_h * out_w * channels * nodes * out_channels
        + SPARSE_COST * nonzeros * batch * channels,
    }
    return min(cost, key=cost.get)


class _CrownSum(torch.autograd.Function):
    """``matrix @ dense`` for a constant sparse ``matrix``; the backward pass multiplies by its stored transpose."""

    @staticmethod
    def forward(ctx, matrix, matrix_t, dense):
        ctx.matrix_t = matrix_t
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.matrix_t @ grad.contiguous()


def _crown_sum(plan, dense):
    # In the plan's dtype: autocast would cast the sparse matrix too, and CPU sparse products have no bfloat16.
    with torch.autocast(dense.device.type, enabled=False):
        return _CrownSum.apply(plan.matrix, plan.matrix_t, dense.to(plan.matrix.dtype).contiguous())


# The plans are cached geometry, built by plain Python: under torch.compile, fetch them eagerly rather than trace them.
_conv_plan = torch.compiler.disable(conv_plan)
_sparse_plan = torch.compiler.disable(sparse_plan)


@torch.compiler.disable  # Triton launches over cached plans: under torch.compile, run eagerly
def _triton_gather_path(input, weight, stride, padding_mode, kernel_rad):
    height, width = input.shape[-2:]
    plan = triton_plan(height, width, kernel_rad, stride, tuple(weight.shape[2:]), input.device)
    x = _pad_width(input, plan.window.pad_left, plan.window.pad_right, padding_mode)
    return crown_gather(x, weight, plan, width // stride[1], stride[1])


def _gather_path(input, weight, stride, padding_mode, kernel_rad):
    if input.shape[0] > 0 and triton_available(input.device, input.dtype):
        return _triton_gather_path(input, weight, stride, padding_mode, kernel_rad)
    out_channels, in_channels, kh, kw = weight.shape
    height, width = input.shape[-2:]
    plan = _conv_plan(height, width, kernel_rad, stride, (kh, kw), input.device, input.dtype)
    out_w = width // stride[1]
    win = plan.window
    x = _pad_width(input, win.pad_left, win.pad_right, padding_mode).flatten(2)  # [B, C, H * Wp]
    flat_weight = weight.reshape(out_channels, in_channels, kh * kw)
    rows = []
    for bucket in plan.buckets:
        taps = bucket.node.shape[1]
        gathered = x.index_select(2, bucket.source).view(*x.shape[:2], len(bucket.out_rows), taps, out_w)
        kernel = sum(flat_weight[:, :, bucket.node[..., m]] * bucket.coef[..., m] for m in range(4))  # [O, C, R, T]
        rows.append(torch.einsum("bcrtw,ocrt->borw", gathered, kernel))
    # Buckets hold rows by tap count, not in order: put them back in order.
    return torch.cat(rows, dim=2).index_select(2, plan.row_order)


def _sparse_path(input, weight, stride, padding_mode, kernel_rad, mix_first):
    batch, channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = height // stride[0], width // stride[1]
    # 16-bit inputs use a float32 matrix: sparse products have no bfloat16 on the CPU, and the sums stay exact-ish.
    matrix_dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    plan = _sparse_plan(height, width, kernel_rad, stride, (kh, kw), mix_first, input.device, matrix_dtype)
    x = _pad_width(input, plan.window.pad_left, plan.window.pad_right, padding_mode)
    flat_weight = weight.reshape(out_channels, channels, kh * kw)
    if mix_first:
        nodes = torch.einsum("ock,bchw->khwbo", flat_weight, x).reshape(kh * kw * x.shape[2] * x.shape[3], -1)
        out = _crown_sum(plan, nodes).to(nodes.dtype).view(out_h, out_w, batch, out_channels)
        return out.permute(2, 3, 0, 1)
    pixels = x.permute(2, 3, 0, 1).reshape(x.shape[2] * x.shape[3], -1)
    projected = _crown_sum(plan, pixels).view(kh * kw, out_h, out_w, batch, channels)
    return torch.einsum("khwbc,ock->bohw", projected.to(pixels.dtype), flat_weight)


def spherical_conv(input, weight, bias=None, stride=1, padding="valid", padding_mode="sphere", kernel_rad=math.pi / 3):
    """Spherical crown convolution of an equirectangular panorama.

    Args:
        input: ``[B, C_in, H, W]`` floating tensor, ``H, W >= 2``.
        weight: ``[C_out, C_in, kh, kw]`` kernel values at the nodes ``alpha_a = a r / (kh - 1)``,
            ``beta_b = b 2 pi / kw``.
        bias: optional ``[C_out]``.
        stride: int or ``(s_h, s_w)``; must divide ``(H, W)``.
        padding: only ``'valid'`` (the output is always ``H / s_h x W / s_w``).
        padding_mode: ``'sphere'`` (no seam, the default), or a strip cut at phi = 0 padded with
            ``'zeros'``, a number, ``'reflect'`` or ``'replicate'``.
        kernel_rad: crown radius r in radians, ``0 < r <= pi``.

    Returns:
        ``[B, C_out, H / s_h, W / s_w]``.
    """
    check_input(input)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape [C_out, C_in, kh, kw] (4 dimensions), got {tuple(weight.shape)}")
    batch, channels, height, width = input.shape
    out_channels, in_channels, kh, kw = weight.shape
    if in_channels != channels:
        raise ValueError(f"weight expects C_in={in_channels} input channels, but input has {channels}")
    if kh < 1 or kw < 1:
        raise ValueError(f"weight's kernel_size (kh, kw) must be at least (1, 1), got {(kh, kw)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.shape != (out_channels,):
            raise ValueError(f"bias must have shape [C_out]=[{out_channels}], got {tuple(bias.shape)}")
    stride = pair(stride, "stride")
    if height % stride[0] or width % stride[1]:
        raise ValueError(f"stride {stride} must divide the input size (H, W)=({height}, {width})")
    if padding != "valid":
        raise ValueError(f"padding must be 'valid' (the output is always H/s_h x W/s_w), got {padding!r}")
    padding_mode = check_padding_mode(padding_mode)
    kernel_rad = check_kernel_rad(kernel_rad)

    fast_gather = batch > 0 and triton_available(input.device, input.dtype)
    path = _choose_path(batch, channels, out_channels, height, width, kernel_rad, stride, (kh, kw), fast_gather)
    if path == "gather":
        out = _gather_path(input, weight, stride, padding_mode, kernel_rad)
    else:
        out = _sparse_path(input, weight, stride, padding_mode, kernel_rad, mix_first=path == "mix_first")
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out

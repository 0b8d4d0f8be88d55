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
  channels. Wins for large crowns and ``C_in < C_out``. On CUDA both sparse formulations run on channels-last
  operands with a Triton CSR product, in the compute dtype (``sconv.functional.sparse_triton``).

No Python loop runs over rows or pixels, only over a handful of row groups.
"""

import functools
import math
import numbers
import os

import torch
import torch.nn.functional as F

from sconv.functional.common import autograd_inside_operator, check_input, pair
from sconv.functional.crown import conv_plan, conv_window, crown_taps, padded_taps, sparse_plan
from sconv.functional.sconv_triton import crown_gather, triton_available, triton_plan
from sconv.functional.sparse_triton import sparse_crown_conv

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


# The cost model counts each formulation's dense-GEMM multiply-adds plus its other work weighted by these constants, in
# GEMM multiply-add equivalents, fitted to timings of all three formulations on the Spherical U-Net's layers (CPU: one
# thread, batch 1 and 2; CUDA: an H100, fwd+bwd, benchmarks/RESULTS.md). "gathered": an element gathered from the input
# (CPU gather path), "kernel": an element of its effective kernel E built by 4-corner gathers; "sparse": a sparse
# multiply-add; "expanded": an element of the node-expanded intermediate (U of mix_first, Z of project_first).
CPU_COSTS = dict(gathered=370, kernel=320, sparse=6, expanded=130)
# CUDA, per compute dtype: the Triton gather kernels' multiply-add against cuBLAS's ("triton"), a multiply-add of the
# Triton CSR product ("sparse", counted over at least MIN_LANES (image, channel) lanes: below that its programs cost
# about the same), and "expanded" as above; fitted to forced-path timings of the U-Net's layers and the 64->64 cases
# (H100, 2026-11-24). Refitted after the weight-gradient kernel's vector loads made the gather path faster (forced-path
# run at 21:34 UTC: float32's "triton" in 1.6-1.85 picks the fastest path or one within 10% on every row, where its
# former 2.4 picked project_first for conv2 128x256, 4.3 ms against gather's 3.9, and mix_first for the 64->64 r=6
# 64x128 case, 5.2 ms against 4.3), and checked again after the forward kernel's deeper pipeline on the run kept in
# benchmarks/results_h100_paths.json (21:53 UTC): float32 1.6-2.0, 16-bit 2.5-3.0 (the largest tried).
CUDA_COSTS = {
    "float32": dict(triton=1.7, sparse=30, expanded=100),
    "16bit": dict(triton=2.75, sparse=50, expanded=200),
}
MIN_LANES = 128
# Largest effective kernel E [taps, C_out, C_in] the Triton path builds, and largest sparse matrix (elements). The
# CUDA cap was measured with cuSPARSE (slower past ~2^25 nonzeros: 64->64 r=6 rows at 128x256, 43 M, 30 ms against
# gather's 25) and kept for the Triton CSR kernel, which was not timed past it.
TRITON_MAX_KERNEL = 2**30
MAX_NONZEROS = 2**27
CUDA_MAX_NONZEROS = 2**25


@torch.compiler.disable  # plain Python over cached geometry: under torch.compile, run it as is, not traced
@functools.lru_cache(maxsize=1024)
def _choose_path(
    batch, channels, out_channels, height, width, kernel_rad, stride, kernel_size, triton_dtype=None, input_grad=True,
    wrapped=True,
):  # fmt: skip
    """The cheapest of the three formulations for this call, by an operation count (see the module docstring).

    ``triton_dtype``: the compute dtype when the gather path would run as the Triton kernels (CUDA), else None.
    ``input_grad``: whether the input's gradient will be needed (a network's first layer: not).
    ``wrapped``: whether the sparse formulations read the input unpadded (padding mode "sphere").
    """
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    out_h, out_w = geom.out_size
    window = conv_window(geom, width, stride[1])
    in_pixels = height * (width if wrapped else width + window.pad_left + window.pad_right)
    nodes = kernel_size[0] * kernel_size[1]
    taps = len(geom.in_row)
    nonzeros = 4 * taps * out_w
    batch = max(batch, 1)
    mix_lanes, project_lanes, project_rebuilds = batch * out_channels, batch * channels, 1.0
    if triton_dtype is None:
        costs = CPU_COSTS
    else:
        costs = CUDA_COSTS["float32" if triton_dtype == torch.float32 else "16bit"]
        # project_first rebuilds Z in the backward pass: three crown sums instead of two when the input needs a
        # gradient.
        mix_lanes, project_lanes = max(mix_lanes, MIN_LANES), max(project_lanes, MIN_LANES)
        project_rebuilds = 1.5 if input_grad else 1.0
    cost = {
        "mix_first": batch * in_pixels * nodes * out_channels * (channels + costs["expanded"])
        + costs["sparse"] * nonzeros * mix_lanes,
        "project_first": batch * out_h * out_w * nodes * channels * out_channels
        + project_rebuilds * (batch * out_h * out_w * nodes * channels * costs["expanded"])
        + project_rebuilds * costs["sparse"] * nonzeros * project_lanes,
    }
    if triton_dtype is None:
        padded = padded_taps(height, width, kernel_rad, stride, kernel_size)
        cost["gather"] = (
            batch * channels * padded * out_w * (out_channels + costs["gathered"])
            + costs["kernel"] * 4 * padded * channels * out_channels
        )
    else:
        # Three kernels of equal work, each tiling one channel axis in blocks of at least 16 (tl.dot's smallest):
        # C_out in the forward and grad-E kernels, C_in in the grad-input one (skipped when the input needs no
        # gradient). E is built by one GEMM over the kernel nodes.
        rounded_in, rounded_out = -(-channels // 16) * 16, -(-out_channels // 16) * 16
        work = (2 * channels * rounded_out + (rounded_in * out_channels if input_grad else 0)) / 3
        cost["gather"] = costs["triton"] * batch * out_w * taps * work + taps * nodes * channels * out_channels
        if taps * channels * out_channels > TRITON_MAX_KERNEL:
            cost["gather"] = float("inf")
    if nonzeros > (MAX_NONZEROS if triton_dtype is None else CUDA_MAX_NONZEROS):
        return "gather"
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
    # CPU and float64 (CUDA's 16-bit and float32 use sparse_triton): in the plan's dtype, as autocast would cast the
    # sparse matrix too, and CPU sparse products have no bfloat16.
    with torch.autocast(dense.device.type, enabled=False):
        return _CrownSum.apply(plan.matrix, plan.matrix_t, dense.to(plan.matrix.dtype).contiguous())


# The plans are cached geometry, built by plain Python: under torch.compile, fetch them eagerly rather than trace them.
_sparse_plan = torch.compiler.disable(sparse_plan)


def _physical_memory():
    """Bytes of memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


@torch.compiler.disable
def _conv_plan(input, kernel_rad, stride, kernel_size):
    """``conv_plan`` for the CPU gather path, refused with the memory it needs when that exceeds the machine's.

    The plan holds an index per (tap, output column) and the path gathers the input under each of them, so a large
    crown on a large grid (1024 x 2048 at pi/32, 128 x 256 at pi) needs tens or hundreds of GB; such a call is refused
    up front rather than attempted.
    """
    batch, channels, height, width = input.shape
    gathered = padded_taps(height, width, kernel_rad, stride, kernel_size) * (width // stride[1])
    need = gathered * (8 + max(batch, 1) * channels * input.element_size())  # int64 index + gathered input
    available = _physical_memory()
    if available is not None and need > available:
        raise ValueError(
            f"spherical_conv: a {height}x{width} input with {channels} channel(s), batch {batch}, stride {stride} and "
            f"kernel_rad={kernel_rad:.6g} needs about {need / 2**30:.1f} GiB on the CPU (the crown's gather index and "
            f"the gathered input), more than this machine's {available / 2**30:.1f} GiB; use a smaller kernel_rad or "
            "input, a larger stride, or a CUDA device"
        )
    return conv_plan(height, width, kernel_rad, stride, kernel_size, input.device, input.dtype)


def _kernel_padding(input, window, padding_mode):
    """``(input, (left, right))`` for the Triton gather path: its layout kernel pads around the sphere by ``window``
    itself; the other modes are padded here, and the kernels then add nothing."""
    if padding_mode == "sphere":
        return input, (window.pad_left, window.pad_right)
    return _pad_width(input, window.pad_left, window.pad_right, padding_mode), (0, 0)


@torch.compiler.disable  # Triton launches over cached plans: under torch.compile, run eagerly
def _triton_gather_path(input, weight, bias, stride, padding_mode, kernel_rad):
    height, width = input.shape[-2:]
    plan = triton_plan(height, width, kernel_rad, stride, tuple(weight.shape[2:]), input.device)
    x, pad = _kernel_padding(input, plan.window, padding_mode)
    return crown_gather(x, weight, bias, plan, width // stride[1], stride[1], pad)


def _with_bias(out, bias):
    # In the output's dtype, as nn.Conv2d under autocast: a float32 bias must not promote a 16-bit output.
    return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


def _gather_path(input, weight, bias, stride, padding_mode, kernel_rad):
    if input.shape[0] > 0 and triton_available(input.device, input.dtype):
        return _triton_gather_path(input, weight, bias, stride, padding_mode, kernel_rad)
    out_channels, in_channels, kh, kw = weight.shape
    height, width = input.shape[-2:]
    plan = _conv_plan(input, kernel_rad, stride, (kh, kw))
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
    return _with_bias(torch.cat(rows, dim=2).index_select(2, plan.row_order), bias)


@torch.compiler.disable  # Triton launches over cached plans: under torch.compile, run eagerly
def _triton_sparse_path(input, weight, bias, stride, padding_mode, kernel_rad, mix_first, dtype):
    """``_sparse_path`` on CUDA in the compute ``dtype`` (``sconv.functional.sparse_triton``)."""
    height, width = input.shape[-2:]
    size = tuple(weight.shape[2:])
    wrapped = padding_mode == "sphere"
    plan = _sparse_plan(height, width, kernel_rad, stride, size, mix_first, wrapped, input.device, torch.float32)
    x = input if wrapped else _pad_width(input, plan.window.pad_left, plan.window.pad_right, padding_mode)
    out_size = (height // stride[0], width // stride[1])
    with torch.autocast(input.device.type, enabled=False):
        return sparse_crown_conv(x, weight, bias, plan, out_size, mix_first, dtype)


def _sparse_path(input, weight, bias, stride, padding_mode, kernel_rad, mix_first, triton_dtype=None):
    if triton_dtype is not None:
        return _triton_sparse_path(input, weight, bias, stride, padding_mode, kernel_rad, mix_first, triton_dtype)
    batch, channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = height // stride[0], width // stride[1]
    # 16-bit inputs use a float32 matrix: sparse products have no bfloat16 on the CPU, and the sums stay exact-ish.
    matrix_dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    wrapped = padding_mode == "sphere"
    plan = _sparse_plan(height, width, kernel_rad, stride, (kh, kw), mix_first, wrapped, input.device, matrix_dtype)
    x = input if wrapped else _pad_width(input, plan.window.pad_left, plan.window.pad_right, padding_mode)
    nodes = kh * kw
    if mix_first:
        # U[b, q, (k, o)] = sum_c x[b, c, q] W[o, c, k]: one GEMM on the channels-last input; the matrix sums U[q, k].
        mixing = weight.permute(1, 2, 3, 0).reshape(channels, nodes * out_channels)
        expanded = x.permute(0, 2, 3, 1).reshape(-1, channels) @ mixing  # [B Hp Wp, K O]
        rows = x.shape[2] * x.shape[3] * nodes
        expanded = expanded.view(batch, rows, out_channels).transpose(0, 1).reshape(rows, batch * out_channels)
        out = _crown_sum(plan, expanded).to(expanded.dtype).view(out_h, out_w, batch, out_channels)
        return _with_bias(out.permute(2, 3, 0, 1), bias)
    # Z[(p, k), (b, c)] = sum_q S[(p, k), q] x[q, (b, c)], then y[b, p, o] = sum_(k, c) Z[b, p, (k, c)] W[o, c, k].
    pixels = x.permute(2, 3, 0, 1).reshape(x.shape[2] * x.shape[3], batch * channels)
    projected = _crown_sum(plan, pixels).to(pixels.dtype).view(out_h * out_w, nodes, batch, channels)
    projected = projected.permute(2, 0, 1, 3)  # [B, P, K, C]
    if weight.numel() > projected.numel():  # reorder the smaller operand: Z to [B P, (C K)], or W to [(K C), O]
        out = projected.transpose(2, 3).reshape(-1, channels * nodes) @ weight.reshape(out_channels, -1).t()
    else:
        out = projected.reshape(-1, nodes * channels) @ weight.permute(2, 3, 1, 0).reshape(-1, out_channels)
    return _with_bias(out.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2), bias)


def _check_parameter(tensor, name, input, kind="a torch.Tensor"):
    """``tensor`` (weight or bias) must be a dense floating tensor on the input's device, of the input's dtype unless
    autocast is on for that device (then the operands are cast to the autocast dtype, as ``nn.Conv2d``'s are)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be {kind}, got {type(tensor).__name__}")
    if not tensor.is_floating_point() or tensor.layout != torch.strided:
        raise TypeError(f"{name} must be a dense floating-point tensor, got {tensor.dtype} ({tensor.layout})")
    if tensor.device != input.device:
        raise ValueError(f"{name} is on {tensor.device} but input is on {input.device}: put both on one device")
    if tensor.dtype != input.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(
            f"{name} has dtype {tensor.dtype} but input has {input.dtype}: give both the same floating dtype "
            "(mixed dtypes are accepted only under torch.autocast)"
        )


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
        ``[B, C_out, H / s_h, W / s_w]`` in the compute dtype: under autocast the autocast dtype, bias included (as
        ``nn.Conv2d``), else the input's.
    """
    check_input(input)
    _check_parameter(weight, "weight", input)
    if weight.dim() != 4:
        raise ValueError(f"weight must have shape [C_out, C_in, kh, kw] (4 dimensions), got {tuple(weight.shape)}")
    batch, channels, height, width = input.shape
    out_channels, in_channels, kh, kw = weight.shape
    if in_channels != channels:
        raise ValueError(f"weight expects C_in={in_channels} input channels, but input has {channels}")
    if channels < 1:
        raise ValueError("input and weight must have at least one input channel (C_in >= 1), got C_in=0")
    if kh < 1 or kw < 1:
        raise ValueError(f"weight's kernel_size (kh, kw) must be at least (1, 1), got {(kh, kw)}")
    if bias is not None:
        _check_parameter(bias, "bias", input, "a torch.Tensor or None")
        if bias.shape != (out_channels,):
            raise ValueError(f"bias must have shape [C_out]=[{out_channels}], got {tuple(bias.shape)}")
    stride = pair(stride, "stride")
    if height % stride[0] or width % stride[1]:
        raise ValueError(f"stride {stride} must divide the input size (H, W)=({height}, {width})")
    if padding != "valid":
        raise ValueError(f"padding must be 'valid' (the output is always H/s_h x W/s_w), got {padding!r}")
    padding_mode = check_padding_mode(padding_mode)
    kernel_rad = check_kernel_rad(kernel_rad)

    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        constant = isinstance(padding_mode, float)
        return torch.ops.sconv.spherical_conv(
            input, weight, bias, stride, "constant" if constant else padding_mode,
            padding_mode if constant else 0.0, kernel_rad,
        )  # fmt: skip
    return _spherical_conv(input, weight, bias, stride, padding_mode, kernel_rad)


def _spherical_conv(input, weight, bias, stride, padding_mode, kernel_rad):
    """``spherical_conv`` on checked arguments: picks the formulation and runs it."""
    batch, channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    triton_dtype = None
    if batch > 0 and triton_available(input.device, input.dtype):
        autocast = torch.is_autocast_enabled(input.device.type)
        triton_dtype = torch.get_autocast_dtype(input.device.type) if autocast else input.dtype
    input_grad = input.requires_grad and torch.is_grad_enabled()
    path = _choose_path(
        batch, channels, out_channels, height, width, kernel_rad, stride, (kh, kw), triton_dtype, input_grad,
        padding_mode == "sphere",
    )  # fmt: skip
    if path == "gather":
        return _gather_path(input, weight, bias, stride, padding_mode, kernel_rad)
    return _sparse_path(input, weight, bias, stride, padding_mode, kernel_rad, path == "mix_first", triton_dtype)


# --- the operator for torch.export and torch.jit.trace ------------------------------------------------------------
# Exporting or tracing the Python above would bake its geometry (built by plain Python from the sizes, cached, partly
# sparse) into the graph, or fail on it. While exporting or tracing, spherical_conv therefore calls it as one
# registered operator, sconv::spherical_conv, whose kernel is the eager code and whose shape function is the output
# size; training and torch.compile keep calling the eager code directly. The operator's backward recomputes the
# forward under autograd (sconv::spherical_conv_backward), so an exported program can also be trained.


def _mode(padding_mode, pad_value):
    return pad_value if padding_mode == "constant" else padding_mode


def _output_dtype(input):
    device = input.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else input.dtype


@torch.library.custom_op("sconv::spherical_conv", mutates_args=())
def _spherical_conv_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding_mode: str,
    pad_value: float,
    kernel_rad: float,
) -> torch.Tensor:
    """``spherical_conv`` with ``padding_mode`` a name (``'constant'``: pad with ``pad_value``); checked arguments."""
    # Contiguous, as the shape function says (the sparse formulations return a permuted view).
    return _spherical_conv(input, weight, bias, tuple(stride), _mode(padding_mode, pad_value), kernel_rad).contiguous()


@_spherical_conv_op.register_fake
def _spherical_conv_fake(input, weight, bias, stride, padding_mode, pad_value, kernel_rad):
    batch, _, height, width = input.shape
    shape = (batch, weight.shape[0], height // stride[0], width // stride[1])
    return input.new_empty(shape, dtype=_output_dtype(input))


@torch.library.custom_op("sconv::spherical_conv_backward", mutates_args=())
def _spherical_conv_backward_op(
    grad: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    stride: list[int],
    padding_mode: str,
    pad_value: float,
    kernel_rad: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``sconv::spherical_conv`` (less the bias's) for the input and the weight, by recomputing it."""
    with autograd_inside_operator():
        x = input.detach().requires_grad_()
        w = weight.detach().requires_grad_()
        out = _spherical_conv(x, w, None, tuple(stride), _mode(padding_mode, pad_value), kernel_rad)
        grad_input, grad_weight = torch.autograd.grad(out, (x, w), grad.to(out.dtype))
    return grad_input.to(input.dtype), grad_weight.to(weight.dtype)


@_spherical_conv_backward_op.register_fake
def _spherical_conv_backward_fake(grad, input, weight, stride, padding_mode, pad_value, kernel_rad):
    return torch.empty_like(input), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding_mode, pad_value, kernel_rad = inputs
    ctx.save_for_backward(input, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype
    ctx.config = (stride, padding_mode, pad_value, kernel_rad)


def _backward(ctx, grad):
    input, weight = ctx.saved_tensors
    grad_input, grad_weight = _spherical_conv_backward_op(grad, input, weight, *ctx.config)
    grad_bias = None if ctx.bias_dtype is None else grad.sum((0, 2, 3)).to(ctx.bias_dtype)
    return grad_input, grad_weight, grad_bias, None, None, None, None


_spherical_conv_op.register_autograd(_backward, setup_context=_setup_context)

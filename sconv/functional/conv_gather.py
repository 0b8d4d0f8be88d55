"""The gather formulation of ``spherical_conv``: its PyTorch version (CPU, float64) and its Triton version (CUDA).

PyTorch: per group of rows with similar tap counts, one ``index_select`` gathers the input under every tap from the
width-padded input (``[B, C, R, T, W']``), each row's effective kernel ``E[o, c, t]`` is built from the weight by a
4-corner gather, and one batched GEMM over the rows does the rest. Costs ``B C O`` per tap, like a planar convolution.

Triton (float32, bfloat16, float16): the same formulation as kernels (``sconv.functional.kernels.gather``) that read
the padded input in place, with no gathered copy; forward and both gradients.

The crown sum of output row ``i`` is one GEMM whose reduction runs over (tap, input channel) pairs ``k = t C + c``:

    y[b, o, i, j] = sum_{t in taps(i)} sum_c E[t, o, c] * x_pad[b, c, row_t, col_t + s_w j]

with ``E[t, o, c] = sum_k nodes[t, k] weight[o, c, k]`` the effective kernel of tap ``t`` (``nodes``: the tap's
bilinear-interpolation and quadrature coefficients on the ``kh kw`` kernel nodes, from ``crown_taps``; E is built by
one GEMM, and rebuilt in the backward pass rather than kept) and ``x_pad`` the width-padded input, made channels
last in one pass by ``conv_layout.wrap_pad`` (rebuilt in the backward too: only ``x`` is kept). The kernels read
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
Tests compare the two versions on a GPU.
"""

import functools

import torch

from sconv.functional.conv_layout import pad_width, triton, with_bias, wrap_pad
from sconv.functional.conv_plans import gather_plan, input_grad_blocks, kernel_grad_blocks, triton_plan

if triton is not None:
    from sconv.functional.kernels.gather import (
        fold_taps_kernel,
        forward_kernel,
        grad_input_kernel,
        grad_kernel_kernel,
        tap_products_kernel,
    )

__all__ = ["gather_conv", "crown_gather"]


def gather_conv(input, weight, bias, stride, padding_mode, kernel_rad, triton_dtype=None):
    """The gather formulation on checked arguments: the Triton version where ``triton_dtype`` (the compute dtype) is
    given, else the PyTorch one."""
    if triton_dtype is not None:
        return _triton_gather_path(input, weight, bias, stride, padding_mode, kernel_rad)
    return _pytorch_gather_path(input, weight, bias, stride, padding_mode, kernel_rad)


def _pytorch_gather_path(input, weight, bias, stride, padding_mode, kernel_rad):
    """The gather formulation in PyTorch, by row groups of the plan (``crown.conv_plan``)."""
    out_channels, in_channels, kh, kw = weight.shape
    height, width = input.shape[-2:]
    plan = gather_plan(input, kernel_rad, stride, (kh, kw))
    out_w = width // stride[1]
    win = plan.window
    x = pad_width(input, win.pad_left, win.pad_right, padding_mode).flatten(2)  # [B, C, H * Wp]
    flat_weight = weight.reshape(out_channels, in_channels, kh * kw)
    rows = []
    for bucket in plan.buckets:
        taps = bucket.node.shape[1]
        gathered = x.index_select(2, bucket.source).view(*x.shape[:2], len(bucket.out_rows), taps, out_w)
        kernel = sum(flat_weight[:, :, bucket.node[..., m]] * bucket.coef[..., m] for m in range(4))  # [O, C, R, T]
        rows.append(torch.einsum("bcrtw,ocrt->borw", gathered, kernel))
    # Buckets hold rows by tap count, not in order: put them back in order.
    return with_bias(torch.cat(rows, dim=2).index_select(2, plan.row_order), bias)


def _kernel_padding(input, window, padding_mode):
    """``(input, (left, right))`` for the Triton gather path: its layout kernel pads around the sphere by ``window``
    itself; the other modes are padded here, and the kernels then add nothing."""
    if padding_mode == "sphere":
        return input, (window.pad_left, window.pad_right)
    return pad_width(input, window.pad_left, window.pad_right, padding_mode), (0, 0)


@torch.compiler.disable  # Triton launches over cached plans: under torch.compile, run eagerly
def _triton_gather_path(input, weight, bias, stride, padding_mode, kernel_rad):
    height, width = input.shape[-2:]
    plan = triton_plan(height, width, kernel_rad, stride, tuple(weight.shape[2:]), input.device)
    x, pad = _kernel_padding(input, plan.window, padding_mode)
    return crown_gather(x, weight, bias, plan, width // stride[1], stride[1], pad)


def _block(n, largest):
    """The smallest power of two >= n, between 16 (tl.dot's minimum) and ``largest``."""
    return max(16, min(largest, triton.next_power_of_2(n)))


def _precision(dtype):
    # float32 follows torch's matmul setting: TF32 tensor cores only where the user allowed them.
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


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
    # Tiles of up to 8192 outputs (at most 128 columns; 16384, i.e. 128 x 128, where shared memory allows), 64 (t, c)
    # per step where C_in allows (else 32: few-channel inputs), 4 warps, 5 pipeline stages where they fit: the fastest
    # settings measured on an H100 (benchmarks/RESULTS.md, "Tuning constants").
    block_o = _block(out_channels, 128)
    largest_tile = 16384 if _max_shared(x_cl.device) >= WIDE_TILE_SMEM else 8192
    block_j = _block(batch * out_w, min(128, largest_tile // block_o))
    block_k = 64 if channels % 64 == 0 else 32
    grid = (out_h * triton.cdiv(batch * out_w, block_j), triton.cdiv(out_channels, block_o))
    forward_kernel[grid](
        x_cl, kernel, kernel if bias is None else bias, y, plan.row_ptr, plan.row_order, plan.tap_base,
        batch, channels, out_channels, height, padded_w, out_h, out_w, stride_w,
        BLOCK_O=block_o, BLOCK_J=block_j, BLOCK_K=block_k, TAP_MAJOR=channels % block_k == 0, HAS_BIAS=bias is not None,
        PRECISION=_precision(x_cl.dtype), num_warps=4, num_stages=_forward_stages(x_cl.device),
    )  # fmt: skip
    return y


def _column_block(n_cols, batch, prefer_wide=False):
    """``(BLOCK_Q, images)`` for the input-gradient kernel: the tile width, and how many whole rows of consecutive
    images one tile holds (1: the row is cut into blocks), whichever wastes the fewest lanes. On a tie, 128 for rows
    of at least 256 columns or if ``prefer_wide``, and 64 otherwise (the faster of the two on an H100)."""
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
    # Up to 128 output channels, 32 (fp32) / 64 (16-bit) columns per step; 128 k per program and 4 warps with at least
    # 64 input channels, else 64 k (8 warps on 128 output channels): the fastest measured on an H100 (RESULTS.md,
    # "Tuning constants").
    block_o = _block(out_channels, 128)
    block_n = 128 if channels >= 64 else 64
    block_row, block_k = kernel_grad_blocks(plan, channels, block_n)
    grid = (len(block_row), triton.cdiv(out_channels, block_o))
    grad_kernel_kernel[grid](
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
    # One entry per step: 64 (o) when C_out is a multiple of 64, 128 (o) when it is one of 128 (in float32 only on
    # tiles of 128 columns that fit in shared memory); 8 warps in float32, on tiles of 128 columns and on 128 (o) per
    # step, else 4. The fastest measured on an H100 (RESULTS.md, "Tuning constants").
    block_c = _block(channels, 64)
    block_k = 128 if out_channels % 128 == 0 else 64
    wide = dtype == torch.float32 and block_k == 128
    if wide and (n_cols < 128 or _max_shared(grad_x.device) < WIDE_TILE_SMEM):
        wide, block_k = False, 64  # float32 gains from 128 (o) per step only on tiles of 128 columns of one image
    block_q, images = _column_block(n_cols, batch, prefer_wide=wide)
    num_warps = 8 if dtype == torch.float32 or block_q == 128 or block_k == 128 else 4
    cols_per_image = n_cols if images > 1 else block_q
    blocks = input_grad_blocks(plan, height, out_w, stride_w, cols_per_image, wrapped)
    grid = (len(blocks[0]) * triton.cdiv(batch, images), triton.cdiv(channels, block_c))
    grad_input_kernel[grid](
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
    block_row, block_k = kernel_grad_blocks(plan, channels, block_n)
    grid = (len(block_row), triton.cdiv(batch * out_w, block_j))
    tap_products_kernel[grid](
        grad_y_cl, kernel, products, block_row, block_k, plan.row_ptr, plan.tap_entry,
        batch, channels, out_channels, out_h, out_w,
        BLOCK_N=block_n, BLOCK_J=block_j, BLOCK_K=32 if dtype == torch.float32 else 64, PRECISION=_precision(dtype),
        num_warps=8, num_stages=3,
    )  # fmt: skip
    block_c, block_q = min(16, triton.next_power_of_2(channels)), 128
    blocks = input_grad_blocks(plan, height, out_w, stride_w, block_q, wrapped)
    grid = (len(blocks[0]), batch, triton.cdiv(channels, block_c))
    fold_taps_kernel[grid](
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

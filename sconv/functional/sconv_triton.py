"""Triton kernels for the gather formulation of ``spherical_conv`` on CUDA: forward and both gradients.

The crown sum of output row ``i`` is one GEMM whose reduction runs over (tap, input channel) pairs ``k = t C + c``:

    y[b, o, i, j] = sum_{t in taps(i)} sum_c E[t, o, c] * x_pad[b, c, row_t, col_t + s_w j]

with ``E[t, o, c] = sum_k nodes[t, k] weight[o, c, k]`` the effective kernel of tap ``t`` (``nodes``: the tap's
bilinear-interpolation and quadrature coefficients on the ``kh kw`` kernel nodes, from ``crown_taps``; E is built by
one differentiable GEMM in PyTorch) and ``x_pad`` the width-padded input. The kernels read ``x_pad`` where it lies
(no im2col buffer):

- forward: a program per (output row, block of output columns, block of output channels, batch index);
- grad E: a program per (tap, block of O, block of C), reducing over batch and output columns;
- grad x_pad: a program per (input row, block of padded columns, block of C, batch index), over the taps that read
  that input row. Every element is written once: no atomics, deterministic.

Rows are launched heaviest first: near the poles a crown holds many more pixels than at the equator.
The CPU (and float64) path is the pure-PyTorch one in ``sconv.functional.sconv``; tests compare the two on a GPU.
"""

import functools
from dataclasses import dataclass

import torch

from sconv.functional.crown import conv_window, crown_taps

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


@dataclass(frozen=True)
class TritonPlan:
    """``crown_taps`` as the kernels read it (int32 device tensors; T taps, H input rows, H' output rows).

    Attributes:
        window: the width padding (``ConvWindow``); ``padded_w`` the padded width Wp.
        row_ptr: ``[H' + 1]``, taps of output row i are ``row_ptr[i]:row_ptr[i + 1]``; ``row_order`` ``[H']``
            output rows by decreasing tap count (launch order).
        tap_row: ``[T]`` output row of each tap; ``tap_base``: ``[T]`` offset ``row_t Wp + col_t`` in an input
            plane of the tap's value for output column 0.
        in_ptr, in_taps: ``[H + 1]`` and ``[T]``, the taps grouped by input row (CSR); ``in_order`` ``[H]`` input
            rows by decreasing tap count.
        nodes: ``[T, kh kw]`` float32, each tap's coefficient on each kernel node.
    """

    window: object
    padded_w: int
    row_ptr: torch.Tensor
    row_order: torch.Tensor
    tap_row: torch.Tensor
    tap_base: torch.Tensor
    in_ptr: torch.Tensor
    in_taps: torch.Tensor
    in_order: torch.Tensor
    nodes: torch.Tensor


@functools.lru_cache(maxsize=256)
def triton_plan(height, width, kernel_rad, stride, kernel_size, device):
    """The ``TritonPlan`` of one configuration on ``device``; cached."""
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    window = conv_window(geom, width, stride[1])
    padded_w = width + window.pad_left + window.pad_right
    out_h = geom.out_size[0]
    taps = len(geom.in_row)
    if taps * max(padded_w, 1) * height >= 2**31:
        raise ValueError(f"a {height}x{width} input with kernel_rad={kernel_rad:.6g} is too large for the int32 plan")
    counts = geom.taps_per_row()
    tap_row = torch.repeat_interleave(torch.arange(out_h), counts)
    tap_base = geom.in_row * padded_w + window.start + (geom.col_offset - window.d_min)
    in_taps = torch.argsort(geom.in_row, stable=True)
    in_counts = torch.bincount(geom.in_row, minlength=height)
    in_ptr = torch.zeros(height + 1, dtype=torch.long)
    in_ptr[1:] = torch.cumsum(in_counts, 0)
    nodes = torch.zeros(taps, kernel_size[0] * kernel_size[1], dtype=torch.float64)
    nodes.index_put_((torch.arange(taps)[:, None].expand(-1, 4), geom.node), geom.coef, accumulate=True)

    def dev(t):
        return t.to(device=device, dtype=torch.int32)

    return TritonPlan(
        window=window,
        padded_w=padded_w,
        row_ptr=dev(geom.row_ptr),
        row_order=dev(torch.argsort(counts, descending=True, stable=True)),
        tap_row=dev(tap_row),
        tap_base=dev(tap_base),
        in_ptr=dev(in_ptr),
        in_taps=dev(in_taps),
        in_order=dev(torch.argsort(in_counts, descending=True, stable=True)),
        nodes=nodes.to(device=device, dtype=torch.float32),
    )


def _block(n, largest):
    """The smallest power of two >= n, between 16 (tl.dot's minimum) and ``largest``."""
    return max(16, min(largest, triton.next_power_of_2(n)))


def _precision(dtype):
    # float32 follows torch's matmul setting: TF32 tensor cores only where the user allowed them.
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


if triton is not None:

    @triton.jit
    def _forward_kernel(
        x_ptr, e_ptr, y_ptr, row_ptr, row_order, tap_base,
        n_in, n_out, plane, out_h, out_w, stride_w,
        BLOCK_O: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr, TAP_MAJOR: tl.constexpr,
        PRECISION: tl.constexpr,
    ):  # fmt: skip
        # TAP_MAJOR: n_in is a multiple of BLOCK_K, so a block of k = t n_in + c lies within one tap t.
        n_jb = tl.cdiv(out_w, BLOCK_J)
        pid = tl.program_id(0)
        i = tl.load(row_order + pid // n_jb)
        offs_j = (pid % n_jb) * BLOCK_J + tl.arange(0, BLOCK_J)
        offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        b = tl.program_id(2).to(tl.int64)
        mask_j = offs_j < out_w
        mask_o = offs_o < n_out
        x_batch = x_ptr + b * n_in * plane
        k_lo = tl.load(row_ptr + i) * n_in
        k_hi = tl.load(row_ptr + i + 1) * n_in
        acc = tl.zeros((BLOCK_O, BLOCK_J), dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            if TAP_MAJOR:
                t = k0 // n_in
                c = (k0 - t * n_in) + tl.arange(0, BLOCK_K)
                base = tl.load(tap_base + t)
                x_off = c.to(tl.int64) * plane + base
                xv = tl.load(x_batch + x_off[:, None] + offs_j[None, :] * stride_w, mask=mask_j[None, :], other=0.0)
                e_off = tl.max_contiguous(tl.multiple_of(t.to(tl.int64) * n_out * n_in + c, BLOCK_K), BLOCK_K)
                ev = tl.load(e_ptr + e_off[None, :] + offs_o[:, None] * n_in, mask=mask_o[:, None], other=0.0)
            else:
                ks = k0 + tl.arange(0, BLOCK_K)
                mask_k = ks < k_hi
                t = ks // n_in
                c = ks - t * n_in
                base = tl.load(tap_base + t, mask=mask_k, other=0)
                x_off = c.to(tl.int64) * plane + base
                mask_x = mask_k[:, None] & mask_j[None, :]
                xv = tl.load(x_batch + x_off[:, None] + offs_j[None, :] * stride_w, mask=mask_x, other=0.0)
                e_off = t.to(tl.int64) * n_out * n_in + c
                mask_e = mask_o[:, None] & mask_k[None, :]
                ev = tl.load(e_ptr + e_off[None, :] + offs_o[:, None] * n_in, mask=mask_e, other=0.0)
            acc = tl.dot(ev, xv, acc, input_precision=PRECISION)
        y_off = (b * n_out + offs_o[:, None]) * out_h * out_w + i * out_w + offs_j[None, :]
        tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_j[None, :])

    @triton.jit
    def _grad_kernel_kernel(
        x_ptr, gy_ptr, ge_ptr, tap_row, tap_base,
        n_batch, n_in, n_out, plane, out_h, out_w, stride_w,
        BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        t = tl.program_id(0)
        offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_o = offs_o < n_out
        mask_c = offs_c < n_in
        i = tl.load(tap_row + t)
        base = tl.load(tap_base + t)
        n_jb = tl.cdiv(out_w, BLOCK_J)
        acc = tl.zeros((BLOCK_O, BLOCK_C), dtype=tl.float32)
        for n in range(0, n_batch * n_jb):
            b = (n // n_jb).to(tl.int64)
            offs_j = (n % n_jb) * BLOCK_J + tl.arange(0, BLOCK_J)
            mask_j = offs_j < out_w
            gy_off = (b * n_out + offs_o[:, None]) * out_h * out_w + i * out_w + offs_j[None, :]
            gv = tl.load(gy_ptr + gy_off, mask=mask_o[:, None] & mask_j[None, :], other=0.0)
            x_off = (b * n_in + offs_c[None, :]) * plane + base + offs_j[:, None] * stride_w
            xv = tl.load(x_ptr + x_off, mask=mask_j[:, None] & mask_c[None, :], other=0.0)
            acc = tl.dot(gv, xv, acc, input_precision=PRECISION)
        ge_off = (t.to(tl.int64) * n_out + offs_o[:, None]) * n_in + offs_c[None, :]
        tl.store(ge_ptr + ge_off, acc.to(ge_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_c[None, :])

    @triton.jit
    def _grad_input_kernel(
        gy_ptr, e_ptr, gx_ptr, in_ptr, in_taps, in_order, tap_row, tap_base,
        n_in, n_out, padded_w, plane, out_h, out_w, stride_w,
        BLOCK_C: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_O: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        n_qb = tl.cdiv(padded_w, BLOCK_Q)
        pid = tl.program_id(0)
        q = tl.load(in_order + pid // n_qb)
        cols = (pid % n_qb) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        b = tl.program_id(2).to(tl.int64)
        mask_c = offs_c < n_in
        n_ob = tl.cdiv(n_out, BLOCK_O)
        e_lo = tl.load(in_ptr + q)
        e_hi = tl.load(in_ptr + q + 1)
        acc = tl.zeros((BLOCK_C, BLOCK_Q), dtype=tl.float32)
        for n in range(e_lo * n_ob, e_hi * n_ob):
            t = tl.load(in_taps + n // n_ob)
            offs_o = (n % n_ob) * BLOCK_O + tl.arange(0, BLOCK_O)
            mask_o = offs_o < n_out
            i = tl.load(tap_row + t)
            rel = cols - (tl.load(tap_base + t) - q * padded_w)  # padded column minus the tap's column for j = 0
            j = rel // stride_w
            mask_q = (rel >= 0) & (rel - j * stride_w == 0) & (j < out_w)
            e_off = t.to(tl.int64) * n_out * n_in + offs_o[None, :] * n_in + offs_c[:, None]
            ev = tl.load(e_ptr + e_off, mask=mask_c[:, None] & mask_o[None, :], other=0.0)
            gy_off = (b * n_out + offs_o[:, None]) * out_h * out_w + i * out_w + j[None, :]
            gv = tl.load(gy_ptr + gy_off, mask=mask_o[:, None] & mask_q[None, :], other=0.0)
            acc = tl.dot(ev, gv, acc, input_precision=PRECISION)
        gx_off = (b * n_in + offs_c[:, None]) * plane + q * padded_w + cols[None, :]
        tl.store(gx_ptr + gx_off, acc.to(gx_ptr.dtype.element_ty), mask=mask_c[:, None] & (cols < padded_w)[None, :])


def _launch_forward(x_pad, kernel, plan, out_w, stride_w):
    batch, channels, height, padded_w = x_pad.shape
    out_channels = kernel.shape[1]
    out_h = plan.row_order.shape[0]
    y = torch.empty(batch, out_channels, out_h, out_w, device=x_pad.device, dtype=x_pad.dtype)
    block_o, block_j = _block(out_channels, 64), _block(out_w, 64)
    block_k = 32 if x_pad.dtype == torch.float32 else 64
    grid = (out_h * triton.cdiv(out_w, block_j), triton.cdiv(out_channels, block_o), batch)
    _forward_kernel[grid](
        x_pad, kernel, y, plan.row_ptr, plan.row_order, plan.tap_base,
        channels, out_channels, height * padded_w, out_h, out_w, stride_w,
        BLOCK_O=block_o, BLOCK_J=block_j, BLOCK_K=block_k, TAP_MAJOR=channels % block_k == 0,
        PRECISION=_precision(x_pad.dtype),
        num_warps=4, num_stages=3,
    )  # fmt: skip
    return y


def _launch_grad_kernel(x_pad, grad_y, plan, kernel_shape, stride_w):
    batch, channels, height, padded_w = x_pad.shape
    taps, out_channels, _ = kernel_shape
    out_h, out_w = grad_y.shape[2:]
    grad_kernel = torch.empty(kernel_shape, device=x_pad.device, dtype=x_pad.dtype)
    block_o, block_c = _block(out_channels, 64), _block(channels, 64)
    grid = (taps, triton.cdiv(out_channels, block_o), triton.cdiv(channels, block_c))
    _grad_kernel_kernel[grid](
        x_pad, grad_y, grad_kernel, plan.tap_row, plan.tap_base,
        batch, channels, out_channels, height * padded_w, out_h, out_w, stride_w,
        BLOCK_O=block_o, BLOCK_C=block_c, BLOCK_J=_block(out_w, 64), PRECISION=_precision(x_pad.dtype),
        num_warps=4, num_stages=3,
    )  # fmt: skip
    return grad_kernel


def _launch_grad_input(grad_y, kernel, plan, x_shape, stride_w):
    batch, channels, height, padded_w = x_shape
    out_channels = kernel.shape[1]
    out_h, out_w = grad_y.shape[2:]
    grad_x = torch.empty(x_shape, device=grad_y.device, dtype=grad_y.dtype)
    block_c, block_q = _block(channels, 64), _block(padded_w, 64)
    grid = (height * triton.cdiv(padded_w, block_q), triton.cdiv(channels, block_c), batch)
    _grad_input_kernel[grid](
        grad_y, kernel, grad_x, plan.in_ptr, plan.in_taps, plan.in_order, plan.tap_row, plan.tap_base,
        channels, out_channels, padded_w, height * padded_w, out_h, out_w, stride_w,
        BLOCK_C=block_c, BLOCK_Q=block_q, BLOCK_O=_block(out_channels, 32), PRECISION=_precision(grad_y.dtype),
        num_warps=4, num_stages=3,
    )  # fmt: skip
    return grad_x


class _CrownGather(torch.autograd.Function):
    """``y = crown_sum(x_pad, E)`` with the three kernels above; ``x_pad`` and ``kernel`` contiguous, same dtype."""

    @staticmethod
    def forward(ctx, x_pad, kernel, plan, out_w, stride_w):
        ctx.save_for_backward(x_pad, kernel)
        ctx.plan, ctx.stride_w = plan, stride_w
        return _launch_forward(x_pad, kernel, plan, out_w, stride_w)

    @staticmethod
    def backward(ctx, grad_y):
        x_pad, kernel = ctx.saved_tensors
        grad_y = grad_y.to(x_pad.dtype).contiguous()
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[0]:
            grad_x = _launch_grad_input(grad_y, kernel, ctx.plan, x_pad.shape, ctx.stride_w)
        if ctx.needs_input_grad[1]:
            grad_kernel = _launch_grad_kernel(x_pad, grad_y, ctx.plan, kernel.shape, ctx.stride_w)
        return grad_x, grad_kernel, None, None, None


def crown_gather(x_pad, weight, plan, out_w, stride_w):
    """The crown convolution of a width-padded input ``x_pad [B, C, H, Wp]`` (padded by ``plan.window``).

    Args:
        x_pad: ``[B, C_in, H, Wp]`` on CUDA, ``B >= 1``.
        weight: ``[C_out, C_in, kh, kw]``.
        plan: ``triton_plan`` of the configuration.
        out_w, stride_w: output width and column stride.

    Returns:
        ``[B, C_out, H', W']`` in the compute dtype (the autocast dtype under autocast, else the input's).
    """
    dtype = x_pad.dtype
    if torch.is_autocast_enabled(x_pad.device.type):
        dtype = torch.get_autocast_dtype(x_pad.device.type)
    out_channels, channels, kh, kw = weight.shape
    # E[t, o, c] = sum_k nodes[t, k] weight[o, c, k]: one GEMM, differentiable; the kernels read E as [T, O, C].
    flat_weight = weight.to(dtype).permute(2, 3, 0, 1).reshape(kh * kw, out_channels * channels)
    with torch.autocast(x_pad.device.type, enabled=False):
        kernel = (plan.nodes.to(dtype) @ flat_weight).view(-1, out_channels, channels)
    return _CrownGather.apply(x_pad.to(dtype).contiguous(), kernel, plan, out_w, stride_w)

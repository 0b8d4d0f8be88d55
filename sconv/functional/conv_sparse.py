"""The sparse formulations of ``spherical_conv`` (mix_first, project_first): their PyTorch version (CPU, float64) and
their Triton version (CUDA).

- ``mix_first``: a 1x1 GEMM expands the input onto the ``kh kw`` nodes (``U[k, q] = sum_c W[o, c, k] x[c, q]``), then
  one sparse matrix sums each crown. Wins for large crowns (many taps, few nodes) and ``C_out <= C_in``.
- ``project_first``: the sparse matrix first projects the input onto the nodes (``Z[k, p]``), then a GEMM mixes the
  channels. Wins for large crowns and ``C_in < C_out``.

PyTorch: the crown sum is a ``torch.sparse`` CSR product (``_CrownSum``) in the plan's dtype.

Triton (float32, bfloat16, float16): the same formulations on channels-last operands made by ``conv_layout.wrap_pad``
(no padding: a wrapped plan goes around the sphere itself, and the other padding modes come padded), in the compute
dtype, keeping only the input and the weight for the backward pass (``_SparseCrownConv``). Their crown sum is
``csr_rows(matrix, dense)``: ``out[b] = S @ dense[b]`` for every image ``b`` at once, with ``S`` a constant CSR matrix
of the plan (or its stored transpose for the gradient) and ``dense [B, R, N]`` channels (N) contiguous, summed in
float32 (kernel: ``sconv.functional.kernels.sparse``). Against ``torch.sparse`` (cuSPARSE) it needs no batch-major
transposes of the node-expanded operand (cuSPARSE takes one 2-D dense matrix, so the batch had to join the columns),
and it reads 16-bit operands as they are (cuSPARSE's CSR product has no bfloat16 here). A program sums one row of
``S`` for a block of the flattened (image, channel) axis, gathering the dense rows of ``BLOCK_E`` nonzeros at a time
(more of them when the lanes are few).
"""

import functools

import torch

from sconv.functional.conv_layout import pad_width, triton, with_bias, wrap_fold, wrap_pad
from sconv.functional.conv_plans import sparse_plan

if triton is not None:
    from sconv.functional.kernels.sparse import csr_rows_kernel

__all__ = ["sparse_conv", "csr_rows", "sparse_crown_conv"]


@torch.compiler.disable  # Triton launches over cached plans: under torch.compile, run eagerly
def _triton_sparse_path(input, weight, bias, stride, padding_mode, kernel_rad, mix_first, dtype):
    """``sparse_conv`` on CUDA in the compute ``dtype``."""
    height, width = input.shape[-2:]
    size = tuple(weight.shape[2:])
    wrapped = padding_mode == "sphere"
    plan = sparse_plan(height, width, kernel_rad, stride, size, mix_first, wrapped, input.device, torch.float32)
    # Under autocast, cast before the op (as autocast does for nn.Conv2d), so that the op keeps the 16-bit copy, not
    # the float32 input, for its backward pass.
    x = input.to(dtype)
    x = x if wrapped else pad_width(x, plan.window.pad_left, plan.window.pad_right, padding_mode)
    out_size = (height // stride[0], width // stride[1])
    with torch.autocast(input.device.type, enabled=False):
        return sparse_crown_conv(x, weight, bias, plan, out_size, mix_first, dtype)


def sparse_conv(input, weight, bias, stride, padding_mode, kernel_rad, mix_first, triton_dtype=None):
    """mix_first (``mix_first``) or project_first on checked arguments: the Triton version where ``triton_dtype`` (the
    compute dtype) is given, else the PyTorch one."""
    if triton_dtype is not None:
        return _triton_sparse_path(input, weight, bias, stride, padding_mode, kernel_rad, mix_first, triton_dtype)
    batch, channels, height, width = input.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = height // stride[0], width // stride[1]
    # 16-bit inputs use a float32 matrix: sparse products have no bfloat16 on the CPU, and the sums stay exact-ish.
    matrix_dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    wrapped = padding_mode == "sphere"
    plan = sparse_plan(height, width, kernel_rad, stride, (kh, kw), mix_first, wrapped, input.device, matrix_dtype)
    x = input if wrapped else pad_width(input, plan.window.pad_left, plan.window.pad_right, padding_mode)
    nodes = kh * kw
    if mix_first:
        # U[b, q, (k, o)] = sum_c x[b, c, q] W[o, c, k]: one GEMM on the channels-last input; the matrix sums U[q, k].
        mixing = weight.permute(1, 2, 3, 0).reshape(channels, nodes * out_channels)
        expanded = x.permute(0, 2, 3, 1).reshape(-1, channels) @ mixing  # [B Hp Wp, K O]
        rows = x.shape[2] * x.shape[3] * nodes
        expanded = expanded.view(batch, rows, out_channels).transpose(0, 1).reshape(rows, batch * out_channels)
        out = _crown_sum(plan, expanded).to(expanded.dtype).view(out_h, out_w, batch, out_channels)
        return with_bias(out.permute(2, 3, 0, 1), bias)
    # Z[(p, k), (b, c)] = sum_q S[(p, k), q] x[q, (b, c)], then y[b, p, o] = sum_(k, c) Z[b, p, (k, c)] W[o, c, k].
    pixels = x.permute(2, 3, 0, 1).reshape(x.shape[2] * x.shape[3], batch * channels)
    projected = _crown_sum(plan, pixels).to(pixels.dtype).view(out_h * out_w, nodes, batch, channels)
    projected = projected.permute(2, 0, 1, 3)  # [B, P, K, C]
    if weight.numel() > projected.numel():  # reorder the smaller operand: Z to [B P, (C K)], or W to [(K C), O]
        out = projected.transpose(2, 3).reshape(-1, channels * nodes) @ weight.reshape(out_channels, -1).t()
    else:
        out = projected.reshape(-1, nodes * channels) @ weight.permute(2, 3, 1, 0).reshape(-1, out_channels)
    return with_bias(out.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2), bias)


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
    # The PyTorch version (CUDA's 16-bit and float32 use the Triton one): in the plan's dtype, as autocast would cast
    # the sparse matrix too, and CPU sparse products have no bfloat16.
    with torch.autocast(dense.device.type, enabled=False):
        return _CrownSum.apply(plan.matrix, plan.matrix_t, dense.to(plan.matrix.dtype).contiguous())


# csr_rows' launch: 2 KB of lanes per program (512 float32 or 1024 16-bit ones), at least MIN_BLOCK_E nonzeros per
# step, vectors of at most MAX_VEC lanes; with few lanes (a single output channel) a step takes more nonzeros, up to
# TILE_ELEMENTS gathered values. Tuned on an H100 (RESULTS.md, "Tuning constants").
MIN_BLOCK_E, BLOCK_BYTES, MAX_VEC, TILE_ELEMENTS = 4, 2048, 8, 2048


def csr_rows(matrix, dense, out=None):
    """``matrix [P, R]`` (sparse CSR) times each ``dense[b] [R, N]``: ``[B, P, N]`` in ``dense``'s dtype, written
    into ``out`` (contiguous) when given."""
    dense = dense.contiguous()
    batch, rows_in, n_cols = dense.shape
    rows_out = matrix.shape[0]
    if out is None:
        out = torch.empty(batch, rows_out, n_cols, device=dense.device, dtype=dense.dtype)
    lanes = batch * n_cols
    if out.numel() == 0:
        return out
    block_m = max(16, min(BLOCK_BYTES // dense.element_size(), triton.next_power_of_2(lanes)))
    crow, col, values, per_row = _csr_parts(matrix)
    csr_rows_kernel[(rows_out, triton.cdiv(lanes, block_m))](
        crow, col, values, dense, out, rows_in, rows_out, n_cols, lanes,
        BLOCK_E=max(MIN_BLOCK_E, min(TILE_ELEMENTS // block_m, per_row)), BLOCK_M=block_m,
        VEC=min(MAX_VEC, n_cols & -n_cols), num_warps=4,
    )  # fmt: skip
    return out


@functools.lru_cache(maxsize=128)  # as many matrices as sparse_plan's cache holds
def _csr_parts(matrix):
    """A plan's CSR matrix as the kernel reads it (fetched once: each accessor is an op with its own host cost), and
    its mean nonzeros per row rounded up to a power of two: a program takes MIN_BLOCK_E nonzeros per step, or more
    when its lane block is narrow, but not past that mean (the transposed matrices have a few dozen per row)."""
    per_row = triton.next_power_of_2(max(1, matrix.values().numel() // max(1, matrix.shape[0])))
    return matrix.crow_indices(), matrix.col_indices(), matrix.values(), per_row


# Images per chunk: at most this many elements of the node-expanded intermediate exist at once (a whole batch's worth
# is kh kw times its activations), unless a chunk would give the CSR kernel fewer than MIN_CHUNK_LANES lanes.
CHUNK_ELEMENTS, MIN_CHUNK_LANES = 2**27, 1024
# mix_first multiplies x as it lies, one GEMM per image, for images of at least this many pixels; smaller images
# (the U-Net's deep layers) take a channels-last copy and one GEMM over every (image, pixel): per-image GEMMs with so
# few columns are slower, and the copy is small (benchmarks/RESULTS.md, 2026-12-07).
PER_IMAGE_GEMM_MIN_PIXELS = 1024


def _chunks(batch, plan, mix_first, channels, out_channels):
    """Slices of the batch for the sparse formulations' passes (see CHUNK_ELEMENTS)."""
    lanes = out_channels if mix_first else channels  # per image, in the CSR products
    per_image = plan.matrix.shape[1 if mix_first else 0] * lanes
    step = max(1, CHUNK_ELEMENTS // max(per_image, 1), -(-MIN_CHUNK_LANES // max(lanes, 1)))
    return [slice(b, min(b + step, batch)) for b in range(0, batch, step)]


class _SparseCrownConv(torch.autograd.Function):
    """The sparse formulations as one op that keeps only ``x``, ``weight`` and the weight's reordered copy for the
    backward pass: for project_first, the channels-last copy of ``x`` and the node-expanded ``Z`` are rebuilt there
    (one layout pass, one more crown sum), where keeping them would cost ``kh kw`` times the activations. Both passes
    run over chunks of images (``_chunks``) to bound the node-expanded intermediate, and every layout copy (of ``x``,
    of the output's gradient, of the input's gradient) is made per chunk and freed before the next one exists; mix_first
    reads ``x`` and writes the input's gradient as they lie (``[b, C, H W]``, batched GEMMs with a transposed operand),
    copying ``x`` channels-last only for its weight's gradient. The weight is cast to the compute
    ``dtype`` in the copy that reorders it for the GEMM, and its gradient is summed in float32 over the chunks and
    returned in its own dtype and layout: no separate cast in the graph. ``bias`` (or None) is added in float32 by the
    pass that lays the output out as ``[B, C_out, H', W']``, so that the output stays in the compute dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, plan, out_size, mix_first, dtype):
        ctx.save_for_backward(x, weight)
        ctx.plan, ctx.mix_first, ctx.dtype = plan, mix_first, dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        batch, channels = x.shape[:2]
        out_channels = weight.shape[0]
        reordered = _mixing(weight, dtype) if mix_first else _projection(weight, dtype)
        ctx.reordered = reordered  # the weight's size: kept for the input's gradient rather than copied again
        out = x.new_empty(batch, out_size[0] * out_size[1], out_channels, dtype=dtype)  # [B, P, O]
        for part in _chunks(batch, plan, mix_first, channels, out_channels):
            _forward_chunk(plan, x[part], reordered, mix_first, out[part], dtype)
        return wrap_fold(out.view(batch, *out_size, out_channels), 0, out_size[1], dtype, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        plan, mix_first, dtype = ctx.plan, ctx.mix_first, ctx.dtype
        batch, channels, height, width = x.shape
        out_channels, _, kh, kw = weight.shape
        chunks = _chunks(batch, plan, mix_first, channels, out_channels)
        input_grad = ctx.needs_input_grad[0]
        grad_x = torch.empty(x.shape, device=x.device, dtype=x.dtype) if input_grad and len(chunks) > 1 else None
        grad_weight = 0
        for part in chunks:
            grad_cl = wrap_pad(grad[part], 0, 0, dtype, channels_last=True)  # [b, H', W', O]
            grad_cl = grad_cl.view(grad_cl.shape[0], -1, out_channels)
            grad_w_part, grad_x_part = _backward_chunk(plan, x[part], grad_cl, ctx.reordered, mix_first, input_grad)
            del grad_cl
            grad_weight = grad_weight + grad_w_part
            if grad_x is not None:
                grad_x[part] = grad_x_part
            elif input_grad:
                grad_x = grad_x_part.to(x.dtype)
        if mix_first:
            grad_weight = grad_weight.view(channels, kh, kw, out_channels).permute(3, 0, 1, 2)
        else:
            grad_weight = grad_weight.view(kh, kw, channels, out_channels).permute(3, 2, 0, 1)
        grad_weight = grad_weight.to(weight.dtype, memory_format=torch.contiguous_format)
        grad_bias = None
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3), dtype=torch.float32).to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _pixels(x_part, dtype):
    """A chunk of images ``[b, C, H, W]`` as ``[b, C, H W]`` in ``dtype``: a view where it can be one."""
    return x_part.to(dtype).reshape(x_part.shape[0], x_part.shape[1], -1)


def _forward_chunk(plan, x_part, reordered, mix_first, out_part, dtype):
    """The forward pass of a chunk of images ``x_part [b, C, H, W]``, written into ``out_part [b, P, O]``. A function
    of its own, so that its intermediates are freed before the next chunk's exist."""
    batch, channels = x_part.shape[:2]
    out_channels = out_part.shape[-1]
    if mix_first:  # U[b, (q, k), o] = sum_c x[b, c, q] W[o, c, k], then the crown sum over (q, k)
        if x_part.shape[2] * x_part.shape[3] < PER_IMAGE_GEMM_MIN_PIXELS:
            x_cl = wrap_pad(x_part, 0, 0, dtype, channels_last=True).view(-1, channels)  # [b Q, C]
            expanded = torch.mm(x_cl, reordered)  # [b Q, k O]
            del x_cl
        else:
            expanded = torch.bmm(_pixels(x_part, dtype).transpose(1, 2), reordered.expand(batch, -1, -1))  # [b, Q, k O]
        csr_rows(plan.matrix, expanded.view(batch, -1, out_channels), out=out_part)
    else:  # Z[b, (p, k), c] = sum_q S[(p, k), q] x[b, q, c], then y[b, p, o] = sum_(k, c) Z W
        x_cl = wrap_pad(x_part, 0, 0, dtype, channels_last=True).view(batch, -1, channels)  # [b, Q, C]
        projected = csr_rows(plan.matrix, x_cl).view(-1, reordered.shape[0])
        del x_cl
        torch.mm(projected, reordered, out=out_part.view(-1, out_channels))


def _backward_chunk(plan, x_part, grad_part, reordered, mix_first, input_grad):
    """The backward pass of a chunk of images ``x_part [b, C, H, W]`` given the output's gradient ``grad_part
    [b, P, O]`` (in the compute dtype): its share of the weight's gradient in float32 (``[C, (k, O)]`` for mix_first,
    ``[(k, C), O]`` for project_first), and with ``input_grad`` the input's gradient ``[b, C, H, W]`` (else None)."""
    batch, channels, height, width = x_part.shape
    out_channels, dtype = grad_part.shape[-1], grad_part.dtype
    if mix_first:
        grad_expanded = csr_rows(plan.matrix_t, grad_part).view(batch, height * width, -1)  # [b, Q, k O]
        # one GEMM over every (image, pixel) needs x channels-last: a copy, freed before the input's gradient exists
        x_cl = wrap_pad(x_part, 0, 0, dtype, channels_last=True).view(-1, channels)  # [b Q, C]
        grad_weight = torch.mm(x_cl.t(), grad_expanded.view(x_cl.shape[0], -1)).float()
        del x_cl
        grad_x = None
        if input_grad and height * width < PER_IMAGE_GEMM_MIN_PIXELS:  # channels-last, laid out as x after
            grad_x_cl = torch.mm(grad_expanded.view(-1, grad_expanded.shape[-1]), reordered.t())  # [b Q, C]
            grad_x = wrap_fold(grad_x_cl.view(batch, height, width, channels), 0, width, x_part.dtype)
        elif input_grad:  # [b, C, Q] = W [C, k O] @ U's gradient transposed: as the input lies
            grad_x = torch.bmm(reordered.expand(batch, -1, -1), grad_expanded.transpose(1, 2))
            grad_x = grad_x.view(batch, channels, height, width)
        return grad_weight, grad_x
    x_cl = wrap_pad(x_part, 0, 0, dtype, channels_last=True).view(batch, -1, channels)  # [b, Q, C]
    projected = csr_rows(plan.matrix, x_cl).view(grad_part.shape[0] * grad_part.shape[1], -1)  # Z: [b P, k C]
    del x_cl
    grad_flat = grad_part.reshape(-1, out_channels)
    grad_weight = torch.mm(projected.t(), grad_flat).float()
    del projected  # Z and its gradient need not exist at once
    grad_x = None
    if input_grad:
        grad_projected = (grad_flat @ reordered.t()).view(batch, plan.matrix.shape[0], channels)
        grad_x_cl = csr_rows(plan.matrix_t, grad_projected)  # [b, Q, C]
        del grad_projected
        grad_x = wrap_fold(grad_x_cl.view(batch, height, width, channels), 0, width, x_part.dtype)
    return grad_weight, grad_x


def _reordered(weight, order, dtype):
    """``weight.permute(*order)`` in ``dtype``, laid out contiguously: one copy."""
    shape = [weight.shape[d] for d in order]
    return torch.empty(shape, device=weight.device, dtype=dtype).copy_(weight.permute(*order))


def _mixing(weight, dtype):
    """``weight`` as ``[C_in, (k, C_out)]`` in ``dtype``: the 1x1 GEMM of mix_first."""
    return _reordered(weight, (1, 2, 3, 0), dtype).view(weight.shape[1], -1)


def _projection(weight, dtype):
    """``weight`` as ``[(k, C_in), C_out]`` in ``dtype``: the GEMM after project_first's crown sum."""
    return _reordered(weight, (2, 3, 1, 0), dtype).view(-1, weight.shape[0])


def sparse_crown_conv(x, weight, bias, plan, out_size, mix_first, dtype):
    """The mix_first / project_first formulation of ``spherical_conv`` on CUDA, in the compute ``dtype``.

    Args:
        x: ``[B, C_in, H, W]``, any strides: the input as ``plan`` reads it (unpadded for a wrapped plan, else padded
            already).
        weight: ``[C_out, C_in, kh, kw]``, any floating dtype (its gradient comes back in it).
        bias: ``[C_out]`` or None, any floating dtype (likewise).
        plan: the ``sparse_plan`` of the configuration (float32 values).
        out_size: ``(H', W')``.
        dtype: the compute dtype (float32, bfloat16 or float16).

    Returns:
        ``[B, C_out, H', W']`` contiguous, in ``dtype``.
    """
    return _SparseCrownConv.apply(x, weight, bias, plan, tuple(out_size), mix_first, dtype)

"""Spherical pooling: 2x downsampling whose window widens toward the poles.

Output pixel ``(i, j)`` pools input rows ``{2i, 2i+1}`` and the ``n_i`` columns ``2j - n_i/2 + 1 .. 2j + n_i/2``
(mod ``W``), ``n_i = min(W, max(2, 2 floor(W / (2 H sin theta'_i) + 1/2)))`` with ``theta'_i`` the output row's
colatitude, so every window covers about the same solid angle. At the equator of a 2:1 panorama it is the planar
2x2 window.

Implementation: rows whose ``n_i`` fall in the same power-of-two bracket ``(2^(k-1), 2^k]`` form a group sharing one
padded window width, so the padding wastes at most half of the gathered values and there are only
``~log2(W)`` groups. Padded window slots repeat the window's first column (harmless for max) with weight 0 (for avg).
When the input needs a gradient, max pooling finds each window's winner without autograd and then gathers it: the
backward pass keeps one index per output (as ``nn.MaxPool2d`` does), not the gathered windows, which are larger than
the input.
"""

import functools

import torch

from sconv.functional.common import (
    autograd_inside_operator,
    check_input,
    choice,
    colatitudes,
    quadrature_weight,
    static_size,
)

__all__ = ["spherical_pool", "pool_window_widths"]

_MODES = ("max", "avg")


def pool_window_widths(h, w):
    """Window width ``n_i`` (in input columns) of each output row of pooling an ``h x w`` panorama, ``[h // 2]``."""
    sin_theta = torch.sin(colatitudes(h // 2))
    return torch.floor(w / (2 * h * sin_theta) + 0.5).mul(2).clamp(2, w).long()


@functools.lru_cache(maxsize=32)
def _cached_pool_geometry(h, w, device):
    """Gather plan for pooling an ``h x w`` panorama, on ``device``.

    Returns ``(groups, row_order)``: ``groups`` is a tuple of ``(index, weight)``, one per group of output rows:
    ``index`` ``[m * (w // 2) * k]`` flat indices into the ``h * w`` input pixels (``k = 2 * window width``: two
    input rows per window), ``weight`` ``[m, k]`` float64 avg weights (``sin theta_q`` normalised per window, 0 on
    padded slots). ``row_order`` ``[h // 2]`` puts the concatenated group outputs back in row order, or is None
    when they already are.
    """
    h_out, w_out = h // 2, w // 2
    widths = pool_window_widths(h, w)
    row_weight = quadrature_weight(h)
    brackets = [(int(n) - 1).bit_length() for n in widths]
    groups, rows_in_order = [], []
    for bracket in sorted(set(brackets)):
        rows = torch.tensor([i for i, b in enumerate(brackets) if b == bracket])
        n = widths[rows]  # [m]
        slot = torch.arange(int(n.max()))
        valid = slot[None, :] < n[:, None]  # [m, n_max]
        # Padded slots reread the window's first column.
        col_offset = torch.where(valid, slot[None, :], 0) - n[:, None] // 2 + 1  # [m, n_max]
        cols = (2 * torch.arange(w_out)[None, :, None] + col_offset[:, None, :]) % w  # [m, w_out, n_max]
        in_rows = 2 * rows[:, None] + torch.arange(2)  # [m, 2]
        index = in_rows[:, None, :, None] * w + cols[:, :, None, :]  # [m, w_out, 2, n_max]
        weight = row_weight[in_rows][:, :, None] * valid[:, None, :]  # [m, 2, n_max]
        weight = (weight / weight.sum(dim=(1, 2), keepdim=True)).flatten(1)
        groups.append((index.flatten().to(device), weight.to(device)))
        rows_in_order.append(rows)
    order = torch.cat(rows_in_order)
    row_order = None if torch.equal(order, torch.arange(h_out)) else torch.argsort(order).to(device)
    return tuple(groups), row_order


# torch.compile sees through lru_cache; marking the lookup constant makes it run eagerly (cached) while tracing
# and bakes the plan into the graph.
@torch.compiler.assume_constant_result
def _pool_geometry(h, w, device):
    return _cached_pool_geometry(h, w, device)


def spherical_pool(input, mode="max"):
    """Spherical 2x pooling of an equirectangular panorama.

    Args:
        input: ``[B, C, H, W]`` with ``H`` and ``W`` even.
        mode: ``'max'`` or ``'avg'``; ``'avg'`` is the mean weighted by ``w_q = sin(theta_q)`` of the input rows.

    Returns:
        ``[B, C, H / 2, W / 2]``, ``y[i, j] = max`` (or weighted mean) of ``x`` over rows ``{2i, 2i+1}`` and
        columns ``2j - n_i/2 + 1 .. 2j + n_i/2`` mod ``W`` (``n_i`` from :func:`pool_window_widths`).
    """
    check_input(input)
    choice(mode, "mode", _MODES)
    b, c, h, w = input.shape
    if h % 2 or w % 2:
        raise ValueError(f"input must have even H and W for spherical pooling, got H={h}, W={w}")
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return torch.ops.sconv.spherical_pool(input, mode)  # the geometry stays out of the graph (see below)
    return _spherical_pool(input, mode)


def _spherical_pool(input, mode):
    """``spherical_pool`` on checked arguments."""
    b, c, h, w = input.shape
    groups, row_order = _pool_geometry(static_size(h), static_size(w), input.device)
    flat = input.reshape(b, c, h * w)
    if mode == "max" and input.requires_grad and torch.is_grad_enabled():
        return _max_pool_by_winner(flat, groups, row_order, h, w)
    pooled = []
    for index, weight in groups:
        m, k = weight.shape
        window = flat.index_select(2, index).view(b, c, m, w // 2, k)
        if mode == "max":
            pooled.append(window.amax(dim=-1))
        else:
            pooled.append((window * weight.to(window.dtype)[:, None, :]).sum(dim=-1))
    out = torch.cat(pooled, dim=2) if len(pooled) > 1 else pooled[0]
    return out if row_order is None else out.index_select(2, row_order)


def _max_pool_by_winner(flat, groups, row_order, h, w):
    """Max pooling of ``flat [B, C, H W]`` for autograd: each window's winner is found without a graph, then one
    gather takes it, so the backward pass keeps an index per output rather than the gathered windows."""
    b, c = flat.shape[:2]
    with torch.no_grad():
        winners = []
        for index, weight in groups:
            m, k = weight.shape
            slot = flat.index_select(2, index).view(b, c, m, w // 2, k).argmax(dim=-1, keepdim=True)
            winners.append(index.view(m, w // 2, k).expand(b, c, -1, -1, -1).gather(-1, slot).flatten(2))
        winner = torch.cat(winners, dim=2) if len(winners) > 1 else winners[0]
        if row_order is not None:
            winner = winner.view(b, c, h // 2, w // 2).index_select(2, row_order).flatten(2)
    return flat.gather(2, winner).view(b, c, h // 2, w // 2)


# While exporting or tracing, spherical_pool runs as one registered operator whose kernel is the eager code: its
# geometry, built by plain Python and cached, is never traced (under torch.export it would be built from fake tensors
# and its data-dependent sizes fail). The backward recomputes the pooling under autograd.


@torch.library.custom_op("sconv::spherical_pool", mutates_args=())
def _spherical_pool_op(input: torch.Tensor, mode: str) -> torch.Tensor:
    """``spherical_pool`` on checked arguments, as an operator."""
    return _spherical_pool(input, mode)


@_spherical_pool_op.register_fake
def _spherical_pool_fake(input, mode):
    b, c, h, w = input.shape
    return input.new_empty((b, c, h // 2, w // 2))


@torch.library.custom_op("sconv::spherical_pool_backward", mutates_args=())
def _spherical_pool_backward_op(grad: torch.Tensor, input: torch.Tensor, mode: str) -> torch.Tensor:
    """Gradient of ``sconv::spherical_pool`` for its input, by recomputing it."""
    with autograd_inside_operator():
        x = input.detach().requires_grad_()
        (grad_input,) = torch.autograd.grad(_spherical_pool(x, mode), (x,), grad)
    return grad_input


@_spherical_pool_backward_op.register_fake
def _spherical_pool_backward_fake(grad, input, mode):
    return torch.empty_like(input)


def _pool_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.mode = inputs[1]


def _pool_backward(ctx, grad):
    (input,) = ctx.saved_tensors
    return _spherical_pool_backward_op(grad, input, ctx.mode), None


_spherical_pool_op.register_autograd(_pool_backward, setup_context=_pool_setup_context)

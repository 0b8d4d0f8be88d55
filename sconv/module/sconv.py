"""``SphericalConv``: the layer holding the crown convolution's parameters (math in ``sconv.functional.sconv``)."""

import math
import numbers

import torch
from torch import nn

from sconv.functional.common import choice, pair, positive_int
from sconv.functional.crown import equator_kernel_basis, smooth_kernel_basis
from sconv.functional.sconv import check_kernel_rad, check_padding_mode, spherical_conv

__all__ = ["SphericalConv"]

_DEFAULT_SR = (15 / (math.pi / 12), 30 / (2 * math.pi))
KERNEL_BASES = (None, "resolved", "smooth")


class SphericalConv(nn.Module):
    """Spherical crown convolution layer.

    The kernel is defined on a spherical cap of radius ``kernel_rad`` around each output pixel, sampled at
    ``kernel_size = (kh, kw)`` nodes in (angular distance alpha, direction beta); see ``spherical_conv``.

    Args:
        in_channels, out_channels: channel counts.
        kernel_rad: crown radius r in radians, ``0 < r <= pi``.
        kernel_sr: node density ``(nodes per radian in alpha, nodes per radian in beta)``, giving
            ``kernel_size = (int(sr_t * r + 0.5), int(sr_p * 2 pi + 0.5))``. Give exactly one of ``kernel_sr`` and
            ``kernel_size`` (``kernel_size`` alone, or with ``kernel_sr=None``, takes precedence over the default).
        kernel_size: ``(kh, kw)`` nodes, or an int for both.
        stride: int or ``(s_h, s_w)`` dividing the input size.
        padding: only ``'valid'``.
        padding_mode: ``'sphere'``, ``'zeros'``, a number, ``'reflect'`` or ``'replicate'``.
        bias: add a learnable bias.
        kernel_basis: how the node values are parametrised. ``None`` (the paper's): one free parameter per node.
            ``'resolved'``: ``weight = coef @ B^T`` with ``B`` the kernels the crown at the equator of a
            ``grid_size`` input tells apart (``sconv.functional.crown.equator_kernel_basis``), so that no part of the
            kernel is left unseen by equatorial data and then read at other latitudes. ``'smooth'``: ``B`` holds
            smooth kernels (radial degree <= 2 times harmonics <= 2 in beta, ``smooth_kernel_basis``).
        grid_size: ``(H, W)`` of the input, needed by ``kernel_basis='resolved'`` (the basis depends on it).

    With a basis the parameter is ``weight_coef [out, in, m]`` and ``node_weight()`` gives the node values;
    without, it is ``weight [out, in, kh, kw]``.

    Shape:
        input ``[B, in_channels, H, W]`` -> output ``[B, out_channels, H / s_h, W / s_w]``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_rad=math.pi / 12,
        kernel_sr=_DEFAULT_SR,
        kernel_size=None,
        stride=1,
        padding="valid",
        padding_mode="sphere",
        bias=False,
        kernel_basis=None,
        grid_size=None,
    ):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_rad = check_kernel_rad(kernel_rad)
        if kernel_size is not None:
            if kernel_sr is not None and kernel_sr is not _DEFAULT_SR:
                raise ValueError("give exactly one of kernel_sr and kernel_size, not both")
            kernel_size = pair(kernel_size, "kernel_size")
        elif kernel_sr is None:
            raise ValueError("give exactly one of kernel_sr and kernel_size; both are None")
        else:
            if len(tuple(kernel_sr)) != 2 or not all(isinstance(v, numbers.Real) and v > 0 for v in kernel_sr):
                raise ValueError(f"kernel_sr must be a pair of positive numbers, got {kernel_sr!r}")
            sr_t, sr_p = kernel_sr
            kernel_size = (int(sr_t * self.kernel_rad + 0.5), int(sr_p * 2 * math.pi + 0.5))
            if min(kernel_size) < 1:
                raise ValueError(
                    f"kernel_sr={tuple(kernel_sr)} with kernel_rad={self.kernel_rad:.6g} gives kernel_size "
                    f"{kernel_size}; each must be >= 1"
                )
        if padding != "valid":
            raise ValueError(f"padding must be 'valid' (the output is always H/s_h x W/s_w), got {padding!r}")
        self.kernel_size = kernel_size
        self.stride = pair(stride, "stride")
        self.padding = padding
        self.padding_mode = check_padding_mode(padding_mode)
        self.kernel_basis = choice(kernel_basis, "kernel_basis", KERNEL_BASES)
        self.grid_size = None if grid_size is None else pair(grid_size, "grid_size")
        if kernel_basis is None:
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *kernel_size))
        else:
            if kernel_basis == "resolved":
                if self.grid_size is None:
                    raise ValueError("kernel_basis='resolved' needs grid_size=(H, W), the input size it resolves")
                basis = equator_kernel_basis(*self.grid_size, self.kernel_rad, kernel_size)
            else:
                basis = smooth_kernel_basis(kernel_size)
            self.register_buffer("basis", basis.float(), persistent=False)
            self.weight_coef = nn.Parameter(torch.empty(out_channels, in_channels, basis.shape[1]))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nodes = self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(self.in_channels * nodes)
        if self.kernel_basis is None:
            nn.init.uniform_(self.weight, -bound, bound)
        else:  # the node values' mean variance is the paper's: B has orthonormal columns
            coef_bound = bound * math.sqrt(nodes / self.basis.shape[1])
            nn.init.uniform_(self.weight_coef, -coef_bound, coef_bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def node_weight(self):
        """The kernel's node values ``[out, in, kh, kw]``."""
        if self.kernel_basis is None:
            return self.weight
        if self.basis.shape[1] == self.basis.shape[0]:  # the basis spans every kernel: its rotation adds nothing
            return self.weight_coef.view(self.out_channels, self.in_channels, *self.kernel_size)
        return (self.weight_coef @ self.basis.T).view(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, input):
        return spherical_conv(
            input, self.node_weight(), self.bias, self.stride, self.padding, self.padding_mode, self.kernel_rad
        )

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_rad={self.kernel_rad:.6g}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding_mode={self.padding_mode!r}, "
            f"bias={self.bias is not None}"
            + (
                ""
                if self.kernel_basis is None
                else f", kernel_basis={self.kernel_basis!r} ({self.basis.shape[1]} terms)"
            )
        )

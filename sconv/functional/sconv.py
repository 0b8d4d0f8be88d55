"""Spherical crown convolution (spec: "Spherical crown convolution").

The math: for output pixel p and the input pixel centres q in its crown N(p) (angular distance <= r),

    y[n, o, p] = bias[o] + sum_c sum_{q in N(p)} K_oc(alpha_pq, beta_pq) x[n, c, q] w_q / sum_{q in N(p)} w_q

with K the bilinear interpolation of ``weight[o, c]`` over ``kh x kw`` nodes in (alpha, beta), ``w_q = sin(theta_q)``.

Three formulations compute it, each in its own module with its PyTorch version (CPU, float64) and its Triton version
(CUDA: float32, bfloat16, float16): ``gather`` (``sconv.functional.conv_gather``: a gather of the input under every
tap and a GEMM per row group, costing ``B C O`` per tap like a planar convolution), ``mix_first`` and
``project_first`` (``sconv.functional.conv_sparse``: a GEMM that mixes the channels on the ``kh kw`` kernel nodes
before or after a sparse matrix sums each crown; they win for large crowns with few nodes). Their costs differ by
orders of magnitude between configurations, so which one runs is chosen per call by ``conv_cost.choose_path``. All
are built on the geometry that ``sconv.functional.crown`` computes once per configuration (``conv_plans``).

No Python loop runs over rows or pixels, only over a handful of row groups.
"""

import math
import numbers

import torch

from sconv.functional.common import autograd_inside_operator, check_input, check_parameter, pair
from sconv.functional.conv_cost import choose_path
from sconv.functional.conv_gather import gather_conv
from sconv.functional.conv_layout import triton_available
from sconv.functional.conv_sparse import sparse_conv

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
    check_parameter(weight, "weight", input)
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
        check_parameter(bias, "bias", input, "a torch.Tensor or None")
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
    path = choose_path(
        batch, channels, out_channels, height, width, kernel_rad, stride, (kh, kw), triton_dtype, input_grad,
        padding_mode == "sphere",
    )  # fmt: skip
    if path == "gather":
        return gather_conv(input, weight, bias, stride, padding_mode, kernel_rad, triton_dtype)
    return sparse_conv(input, weight, bias, stride, padding_mode, kernel_rad, path == "mix_first", triton_dtype)


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

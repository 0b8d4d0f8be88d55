"""Grid and geometry shared by the spherical operators.

The equirectangular grid of ``docs/spec.md``: row ``i`` sits at colatitude
``theta_i = (i + 1/2) pi / H`` (row 0 next to the north pole), column ``j`` at longitude
``phi_j = (j + 1/2) 2 pi / W``. Everything here is plain float64 math on small 1-D tensors; callers cast.
"""

import contextlib
import math
import numbers

import torch

__all__ = [
    "colatitudes",
    "longitudes",
    "pixel_solid_angle",
    "quadrature_weight",
    "check_input",
    "check_parameter",
    "pair",
    "positive_int",
    "choice",
    "static_size",
    "autograd_inside_operator",
]


def colatitudes(h, dtype=torch.float64, device=None):
    """Colatitude of each row centre, shape ``[h]``."""
    return (torch.arange(h, dtype=torch.float64, device=device) + 0.5).mul_(math.pi / h).to(dtype)


def longitudes(w, dtype=torch.float64, device=None):
    """Longitude of each column centre, shape ``[w]``."""
    return (torch.arange(w, dtype=torch.float64, device=device) + 0.5).mul_(2 * math.pi / w).to(dtype)


def pixel_solid_angle(h, w, dtype=torch.float64, device=None):
    """Exact solid angle of one pixel of each row, shape ``[h]``; ``w * sum`` is ``4 pi``.

    ``A_i = (2 pi / W) (cos(i pi / H) - cos((i + 1) pi / H))``.
    """
    edges = torch.arange(h + 1, dtype=torch.float64, device=device).mul_(math.pi / h)
    # cos(a) - cos(b) = 2 sin((a+b)/2) sin((b-a)/2): no cancellation near the poles.
    band = 2 * torch.sin((edges[:-1] + edges[1:]) / 2) * math.sin(math.pi / (2 * h))
    return (band * (2 * math.pi / w)).to(dtype)


def quadrature_weight(h, dtype=torch.float64, device=None):
    """Quadrature weight ``w_q = sin(theta_q)`` of each row, shape ``[h]`` (proportional to pixel area)."""
    return torch.sin(colatitudes(h, device=device)).to(dtype)


def positive_int(value, name):
    """``value`` as an int >= 1; ``name`` is used in the error (TypeError for a non-int, ValueError below 1)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def pair(value, name):
    """``value`` as a pair of positive ints (an int means both); ``name`` is used in the error."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{name} must be positive, got {tuple(value)}")
    return int(value[0]), int(value[1])


def choice(value, name, choices):
    """``value`` if it is one of ``choices``; otherwise a ValueError naming ``name`` and the accepted values."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def static_size(size):
    """``size`` as a plain int. Under torch.compile a dynamic size reaches an operator as a symbol; ``range`` needs a
    concrete value, so this specialises the graph on it (for the geometry tables cached per size)."""
    return len(range(size))


def check_input(input, name="input", min_size=2):
    """Check that ``input`` is a floating ``[B, C, H, W]`` tensor with ``H, W >= min_size``."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W] (4 dimensions), got {input.dim()} dimensions")
    if not input.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {input.dtype}")
    if input.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {input.layout}")
    h, w = input.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{name} must have H, W >= {min_size}, got H={h}, W={w}")


def check_parameter(tensor, name, input, kind="a torch.Tensor"):
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


@contextlib.contextmanager
def autograd_inside_operator():
    """Autograd on again inside the kernel of a ``torch.library`` operator.

    A custom operator's kernel runs below autograd (its dispatch keys excluded), so ``torch.enable_grad`` alone
    records nothing there. The backward operators of ``sconv::spherical_conv`` and ``sconv::spherical_pool`` recompute
    the eager forward under autograd, so they lift that exclusion for the recomputation only (the dispatch key guard
    is private PyTorch API; ``tests/test_export.py``'s ``opcheck`` tests fail if it stops working).
    """
    keys = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (keys.AutogradFunctionality, keys.AutogradOther, keys.AutogradNestedTensor):
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), torch.enable_grad():
        yield

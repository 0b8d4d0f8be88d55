"""The Triton kernel of rotate_equirect (sconv/functional/kernels/rotate.py): run by Triton's CPU interpreter against
the slow float64 NumPy reference of tests/test_rotate.py, its atan2 against torch.atan2 in float64, and on CUDA
against the float64 PyTorch path."""

import pytest
import torch

from sconv.functional import rotate as rotate_module
from sconv.functional import rotate_equirect, rotation_matrix
from tests.triton_tools import ptx_for_h100, run_in_interpreter

INTERPRETER_SCRIPT = """
import math, sys, torch
import numpy as np
import triton, triton.language as tl
from tests.triton_tools import patch_interpreter
patch_interpreter()
from sconv.functional import rotate as R
from sconv.functional.kernels.rotate import atan2
from tests.test_rotate import axis_matrices, reference_rotate
failures = []

def check(case, got, want, atol):
    got, want = got.double(), want.double()
    error = (got - want).abs()
    if not bool((error <= atol).all()):  # a NaN fails too
        failures.append(f"{case}: max error {error.nan_to_num(float('inf')).max().item():.3g} > {atol:g}")

@triton.jit
def atan2_kernel(y_ptr, x_ptr, out_ptr, c3, c5, c7, c9, c11, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(out_ptr + offs, atan2(tl.load(y_ptr + offs), tl.load(x_ptr + offs), c3, c5, c7, c9, c11))

angle = torch.linspace(-math.pi, math.pi, 1021, dtype=torch.float64)
radius = torch.logspace(-3, 3, 1021, dtype=torch.float64)
y = torch.cat([radius * torch.sin(angle), torch.tensor([0.0, 0.0, 1.0, -1.0, 0.0], dtype=torch.float64)])
x = torch.cat([radius * torch.cos(angle), torch.tensor([0.0, -1.0, 0.0, 0.0, 1.0], dtype=torch.float64)])
y, x = y.float(), x.float()
out = torch.empty(1024)
atan2_kernel[(1,)](y[:1024], x[:1024], out, *R.atan_coefficients(), N=1024)
check("atan2", out, torch.atan2(y[:1024].double(), x[:1024].double()), 4e-7)
out = torch.empty(2)
atan2_kernel[(1,)](y[-2:].contiguous(), x[-2:].contiguous(), out, *R.atan_coefficients(), N=2)
check("atan2 axes", out, torch.atan2(y[-2:].double(), x[-2:].double()), 4e-7)

gen = torch.Generator().manual_seed(1)
for h, w in [(6, 12), (5, 9), (7, 14)]:
    image = torch.rand(2, h, w, generator=gen, dtype=torch.float64).float().double()  # exact in float32
    for angles in [(37.0, 58.0, -21.0), (0.3, 89.3, 0.0), (179.1, -88.7, 45.2)]:
        r = axis_matrices(angles[2], angles[1], angles[0])
        for mode in ("bilinear", "nearest"):
            want = torch.from_numpy(reference_rotate(image.numpy(), r, mode))
            got = R._rotate_triton(image[None].float(), torch.from_numpy(r), mode)[0]
            check(f"{h}x{w} {angles} {mode}", got, want, 2e-5 if mode == "bilinear" else 0)
            if mode == "bilinear":
                low = R._rotate_triton(image[None].bfloat16(), torch.from_numpy(r), mode)[0]
                check(f"{h}x{w} {angles} bfloat16", low, want, 1.6e-2)
# One rotation per batch item.
images = torch.rand(3, 2, 7, 14, generator=gen, dtype=torch.float64)
rs = [axis_matrices(*a) for a in [(10.0, 20.0, 30.0), (-5.0, 80.0, 170.0), (33.0, -61.0, -99.0)]]
got = R._rotate_triton(images.float(), torch.from_numpy(np.stack(rs)), "bilinear")
for k in range(3):
    check(f"batch item {k}", got[k], torch.from_numpy(reference_rotate(images[k].numpy(), rs[k], "bilinear")), 2e-5)
# 96 x 192: float32 geometry next to the poles limits both paths; the kernel as accurate as the PyTorch one.
x = torch.rand(3, 2, 96, 192, generator=gen, dtype=torch.float64).float().double()
rs = R.rotation_matrix(torch.tensor([10.0, 200.0, -30.0]), torch.tensor([80.0, -10.0, 45.0]), 17.0)
want = R._rotate_pytorch(x, rs, "bilinear")
error = (R._rotate_triton(x.float(), rs.float(), "bilinear").double() - want).abs()
reference_error = (R._rotate_pytorch(x.float(), rs.float(), "bilinear").double() - want).abs()
if not (bool(error.isfinite().all()) and float(error.max()) <= max(2 * float(reference_error.max()), 5e-5)
        and float(error.mean()) < 1e-5):
    failures.append(f"96x192: max error {float(error.max()):.3g} (float32 PyTorch path "
                    f"{float(reference_error.max()):.3g}), mean {float(error.mean()):.3g}")
print("\\n".join(failures) or "ok")
sys.exit(1 if failures else 0)
"""


def test_kernel_in_the_interpreter_matches_the_float64_reference():
    """The kernel, run by Triton's CPU interpreter: bilinear and nearest, even and odd widths, rotations that bring
    pixels near the poles, float32 and bfloat16, one rotation per batch item; and its atan2 in every octant."""
    run_in_interpreter(INTERPRETER_SCRIPT, timeout=300)


@pytest.mark.parametrize("dtype, nearest", [("fp32", False), ("bf16", False), ("fp32", True)])
def test_kernel_compiles_for_the_h100(dtype, nearest):
    """The kernel compiled by Triton for an H100 (sm_90) on this machine, no GPU needed: the interpreter runs Python
    that the compiler may refuse (a global that is not a constexpr, say)."""
    pytest.importorskip("triton", reason="the `test` extra installs triton where a wheel exists")
    from sconv.functional.kernels.rotate import rotate_equirect_kernel

    types = dict(x_ptr=f"*{dtype}", out_ptr=f"*{dtype}", rot_ptr="*fp32", c3="fp32", c5="fp32", c7="fp32",
                 c9="fp32", c11="fp32")  # fmt: skip
    ptx = ptx_for_h100(rotate_equirect_kernel, types, (), dict(BLOCK=256, NEAREST=nearest), 4)
    assert "ld.global" in ptx and "st.global" in ptx


def test_kernel_path_choice():
    """The kernel serves CUDA float32/16-bit inputs that need no gradient; everything else the PyTorch path."""
    x = torch.rand(1, 1, 4, 8)
    assert not rotate_module._triton_path(x)  # CPU
    if torch.cuda.is_available() and rotate_module.triton is not None:
        assert rotate_module._triton_path(x.cuda())
        assert not rotate_module._triton_path(x.cuda().double())
        assert not rotate_module._triton_path(x.cuda().requires_grad_())
        with torch.no_grad():
            assert rotate_module._triton_path(x.cuda().requires_grad_())


def float32_accuracy(got, torch32, want):
    """``got`` (the kernel) as accurate as the float32 PyTorch path ``torch32`` against float64 ``want``: its float32
    geometry is ill-conditioned next to the poles (where longitude changes fast), so neither is exact there."""
    assert bool(torch.isfinite(got).all())
    error, reference_error = (got - want).abs(), (torch32 - want).abs()
    assert float(error.max()) <= max(2 * float(reference_error.max()), 5e-5)
    assert float(error.mean()) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("size", [(11, 20), (11, 21), (96, 192)])
def test_cuda_kernel_matches_float64(size):
    """On CUDA, float32: bilinear as accurate as the PyTorch path in float32 (both against float64); nearest takes
    the float64 path's pixel but where a source point lies within rounding of a cell border."""
    pytest.importorskip("triton")
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 2, *size, generator=gen, dtype=torch.float64).float().double()  # exact in float32
    rs = rotation_matrix(torch.tensor([10.0, 200.0, -30.0]), torch.tensor([80.0, -10.0, 45.0]), 17.0)
    for rotation in (rs, rs[1]):  # one per item, shared
        for mode in ("bilinear", "nearest"):
            want = rotate_equirect(x, rotation, mode)
            got = rotate_equirect(x.float().cuda(), rotation.float(), mode).cpu().double()
            torch32 = rotate_module._rotate_pytorch(x.float().cuda(), rotation.float().cuda(), mode).cpu().double()
            if mode == "bilinear":
                float32_accuracy(got, torch32, want)
            else:
                assert float((got != want).double().mean()) < 2e-3

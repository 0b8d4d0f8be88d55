"""The fast paths of spherical_conv: factored crown geometry, the Triton kernels (through Triton's CPU interpreter,
and on a GPU against the float64 reference and the PyTorch path), CPU autocast, and the benchmark's tap counts."""

import math
import os
import re
import sys

import pytest
import torch

import sconv.functional.conv_gather as gather_impl
import sconv.functional.sconv as sconv_impl
from sconv.functional.common import colatitudes, longitudes
from sconv.functional.conv_plans import triton_plan
from sconv.functional.crown import RIM_TOLERANCE, crown_taps, kernel_coordinates
from sconv.functional.sconv import spherical_conv
from tests import reference
from tests.triton_tools import ptx_for_h100, run_in_interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (B, C_in, C_out, H, W, stride, r, kernel_size, padding_mode): strides, odd W, every padding mode, r = pi,
# kh or kw = 1, more channels than one tile (C_in a multiple of the reduction tile: the "tap-major" loop).
CONFIGS = [
    (2, 3, 5, 8, 16, (1, 1), 0.5, (3, 8), "sphere"),
    (1, 4, 3, 12, 20, (2, 4), 1.3, (4, 3), "zeros"),
    (2, 2, 3, 6, 12, (1, 1), math.pi, (8, 16), "sphere"),
    (1, 3, 17, 9, 14, (1, 2), 0.5, (3, 5), "reflect"),
    (2, 5, 4, 10, 20, (2, 1), 0.4, (1, 6), "replicate"),
    (1, 2, 2, 7, 9, (1, 3), 1.0, (2, 1), 0.5),
    (1, 32, 40, 6, 12, (1, 1), 0.9, (2, 4), "sphere"),
    (2, 16, 32, 6, 12, (1, 2), 0.8, (3, 4), "sphere"),
    (5, 3, 4, 4, 8, (1, 1), 1.0, (2, 4), "sphere"),  # narrow rows: tiles hold several images, the last one partly
    # C_out >= 8 C_in: the Triton input gradient goes through the tap products
    (2, 2, 16, 8, 16, (2, 2), 0.6, (3, 4), "sphere"),
    (3, 1, 9, 6, 12, (1, 1), 0.9, (2, 3), "zeros"),
]


def rel_err(actual, expected):
    actual, expected = actual.detach().double().cpu(), torch.as_tensor(expected).double().cpu()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


def direct_taps(height, width, kernel_rad, stride):
    """Every (output row, input row, column offset) in the crown of output column 0, by brute force over all input
    pixels, with alpha, beta and rho."""
    out_h = height // stride[0]
    j_p = (stride[1] - 1) // 2  # the input column under output column 0
    phi_p = math.pi * stride[1] / width  # (0 + 1/2) 2 pi / W'
    dphi = longitudes(width) - phi_p
    alpha, beta, rho = kernel_coordinates(colatitudes(out_h)[:, None, None], colatitudes(height)[None, :, None],
                                          dphi[None, None, :])  # fmt: skip
    inside = alpha <= kernel_rad + RIM_TOLERANCE
    out_row, in_row, col = torch.nonzero(inside, as_tuple=True)
    offset = (col - j_p + width // 2) % width - width // 2  # signed shortest offset in [-floor(W/2), ceil(W/2))
    return out_row, in_row, offset, alpha[inside], beta[inside], rho[inside]


@pytest.mark.parametrize("config", [(8, 16, 0.5, (1, 1)), (9, 14, 1.1, (1, 2)), (12, 20, math.pi, (2, 4)),
                                    (16, 32, math.pi / 16, (1, 1)), (7, 9, 2.0, (1, 3))])  # fmt: skip
def test_factored_geometry_matches_brute_force(config):
    height, width, kernel_rad, stride = config
    kw = 5
    geom = crown_taps(height, width, kernel_rad, stride, (3, kw))
    out_row = torch.repeat_interleave(torch.arange(height // stride[0]), geom.taps_per_row())
    single = geom.beta != 0  # pole taps come kw times with beta 0; compare the distinct input points
    got = {(int(i), int(q), int(d)) for i, q, d in zip(out_row, geom.in_row, geom.col_offset)}
    want_i, want_q, want_d, alpha, beta, rho = direct_taps(height, width, kernel_rad, stride)
    assert got == {(int(i), int(q), int(d)) for i, q, d in zip(want_i, want_q, want_d)}
    key = {(int(i), int(q), int(d)): (a, b, r) for i, q, d, a, b, r in zip(want_i, want_q, want_d, alpha, beta, rho)}
    for i, q, d, a, b, s in zip(out_row, geom.in_row, geom.col_offset, geom.alpha, geom.beta, single):
        ref_a, ref_b, ref_rho = key[(int(i), int(q), int(d))]
        assert abs(a - ref_a) < 1e-12
        if s and ref_rho > 1e-9:
            assert min(abs(b - ref_b), 2 * math.pi - abs(b - ref_b)) < 1e-12
    # The coefficients of each output row sum to one: bilinear weights sum to 1, quadrature weights are normalised.
    row_sums = torch.zeros(height // stride[0], dtype=torch.float64).index_add_(0, out_row, geom.coef.sum(1))
    torch.testing.assert_close(row_sums, torch.ones_like(row_sums), rtol=0, atol=1e-12)


def test_triton_plan_encodes_the_taps():
    height, width, kernel_rad, stride, size = 10, 20, 0.7, (2, 2), (3, 4)
    geom = crown_taps(height, width, kernel_rad, stride, size)
    plan = triton_plan(height, width, kernel_rad, stride, size, torch.device("cpu"))
    win, padded_w = plan.window, plan.padded_w
    base = plan.tap_base.long()
    assert torch.equal(base // padded_w, geom.in_row)
    assert torch.equal(base % padded_w - win.start + win.d_min, geom.col_offset)
    assert torch.equal(plan.row_ptr.long(), geom.row_ptr)
    counts = geom.taps_per_row()
    assert torch.equal(plan.tap_row.long(), torch.repeat_interleave(torch.arange(len(counts)), counts))
    assert counts[plan.row_order.long()].diff().le(0).all()  # heaviest rows first
    for q in range(height):  # taps grouped by input row, by column within a row
        taps = plan.in_taps[plan.in_ptr[q] : plan.in_ptr[q + 1]].long()
        assert torch.equal(taps.sort().values, torch.nonzero(geom.in_row == q).squeeze(1))
        assert base[taps].diff().ge(0).all()
    # The input-gradient kernel reads each entry's output row, column and nodes directly, in that order.
    entries = plan.in_taps.long()
    assert torch.equal(plan.entry_row.long(), plan.tap_row.long()[entries])
    assert torch.equal(plan.entry_column.long(), base[entries] - geom.in_row[entries] * padded_w)
    assert torch.equal(plan.entry_nodes, plan.nodes[entries])
    assert torch.equal(entries[plan.tap_entry.long()], torch.arange(len(entries)))
    # With the padding folded in, an entry reads the input column under output column 0 (j_p) plus its offset, mod W.
    j_p = (stride[1] - 1) // 2
    assert torch.equal(plan.entry_input_column.long(), (j_p + geom.col_offset[entries]) % width)
    dense = torch.zeros(len(geom.in_row), size[0] * size[1], dtype=torch.float64)
    for m in range(4):
        dense[torch.arange(len(geom.in_row)), geom.node[:, m]] += geom.coef[:, m]
    torch.testing.assert_close(plan.nodes.double(), dense, rtol=0, atol=1e-7)


INTERPRETER_SCRIPT = """
import math, sys, torch
from tests.triton_tools import patch_interpreter
patch_interpreter()
from sconv.functional import conv_gather, conv_sparse
from sconv.functional import sconv as S
from sconv.functional.conv_gather import crown_gather
from sconv.functional.conv_layout import wrap_fold, wrap_pad
from sconv.functional.conv_plans import triton_plan
from tests.test_fast_paths import CONFIGS
section = sys.argv[1]
torch.manual_seed(0)
failures = []

def check(case, got, want, tol):
    # Per case, relative to the largest expected value; a NaN or Inf anywhere fails.
    got, want = got.detach().double(), want.detach().double()
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item()
    if not (torch.isfinite(got).all() and err < tol):
        failures.append(f"{case}: rel err {err:.3g} (finite: {bool(torch.isfinite(got).all())})")

def conv_case(config):
    batch, c_in, c_out, h, w, stride, r, size, mode = config
    x = torch.randn(batch, c_in, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c_out, c_in, *size, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c_out, requires_grad=True)  # float32: added by the kernels, its gradient summed in float32
    expected = S.spherical_conv(x, weight, bias.double(), stride=stride, padding_mode=mode, kernel_rad=r)
    grad = torch.randn_like(expected)
    gx, gw = torch.autograd.grad(expected, [x, weight], grad)
    xf, wf = x.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    return xf, wf, bias, grad, (expected, gx, gw, grad.sum((0, 2, 3)))

def check_conv(case, got, inputs, grad, expected):
    got_grads = torch.autograd.grad(got, inputs, grad.float())
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), (got, *got_grads), expected):
        check(f"{case} {name}", a, b, 1e-5)

if section == "gather":
    # Both layouts of the backward operands (float32 takes the reduction-axis-contiguous one; 16-bit the other).
    for k_major, config in [(True, c) for c in CONFIGS] + [(False, c) for c in CONFIGS[3:]]:
        conv_gather._k_major_backward = lambda dtype, k_major=k_major: k_major
        batch, c_in, c_out, h, w, stride, r, size, mode = config
        xf, wf, bias, grad, expected = conv_case(config)
        plan = triton_plan(h, w, r, stride, size, torch.device("cpu"))
        # "sphere": padded by the kernels (wrap_pad / wrap_fold); the other modes by PyTorch first
        padded, pad = conv_gather._kernel_padding(xf, plan.window, S.check_padding_mode(mode))
        got = crown_gather(padded, wf, bias, plan, w // stride[1], stride[1], pad)
        check_conv(f"gather k_major={k_major} {config}", got, [xf, wf, bias], grad, expected)
elif section == "sparse":
    # The sparse formulations' CUDA version: csr_rows and the layout kernels, in one chunk, or in chunks of 2-3 images
    # with a partial last one (CONFIGS[8], 5 images) or of one image (CONFIGS[9]); mix_first's per-image GEMMs and its
    # channels-last one in turn. (The interpreter runs csr_rows slowly, and its cost grows with the chunks: a cheaper
    # subset of the configurations.)
    chunking = {CONFIGS[8]: (1, 8), CONFIGS[9]: (1, 1)}
    for i, config in enumerate(CONFIGS[4:]):
        batch, c_in, c_out, h, w, stride, r, size, mode = config
        xf, wf, bias, grad, expected = conv_case(config)
        conv_sparse.CHUNK_ELEMENTS, conv_sparse.MIN_CHUNK_LANES = chunking.get(config, (2**27, 1024))
        conv_sparse.PER_IMAGE_GEMM_MIN_PIXELS = 0 if i % 2 else 2**30
        mode = S.check_padding_mode(mode)
        for mix_first in (True, False):
            got = conv_sparse._triton_sparse_path(xf, wf, bias, stride, mode, r, mix_first, torch.float32)
            case = f"sparse mix_first={mix_first} per-image GEMMs={i % 2 == 1} {config}"
            check_conv(case, got, [xf, wf, bias], grad, expected)
    # A float32 input in a 16-bit compute dtype (autocast): the op keeps the 16-bit copy and the weight for its
    # backward pass, not the float32 input (as nn.Conv2d under autocast); its gradients come back in float32.
    batch, c_in, c_out, h, w, stride, r, size, mode = CONFIGS[6]
    xf, wf, bias, grad, expected = conv_case(CONFIGS[6])
    for mix_first in (True, False):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
            got = conv_sparse._triton_sparse_path(xf, wf, bias, stride, mode, r, mix_first, torch.float16)
        if saved != [torch.float16, torch.float32]:
            failures.append(f"sparse float16 mix_first={mix_first}: saved {saved}, not [x float16, weight float32]")
        got_grads = torch.autograd.grad(got, [xf, wf, bias], grad.half())
        for name, a, b in zip(("y", "dx", "dweight", "dbias"), (got, *got_grads), expected):
            check(f"sparse float16 mix_first={mix_first} {name}", a, b, 1e-2)
            if name != "y" and a.dtype != torch.float32:
                failures.append(f"sparse float16 mix_first={mix_first} {name}: {a.dtype}, not float32")
    # csr_rows alone against a dense product: few long rows, many short ones, narrow lanes.
    for rows, cols, density, batch, n in [(3, 700, 0.9, 2, 3), (40, 30, 0.2, 3, 8)]:
        dense_matrix = torch.rand(rows, cols) * (torch.rand(rows, cols) < density)
        d = torch.randn(batch, cols, n)
        got = conv_sparse.csr_rows(dense_matrix.to_sparse_csr(), d)
        check(f"csr_rows {rows}x{cols}", got, dense_matrix.double() @ d.double(), 1e-5)
elif section == "layout":
    # The layout kernels alone against F.pad's circular padding and its autograd adjoint, pads wider than the input.
    for left, right, width in [(0, 0, 5), (2, 3, 7), (9, 4, 4), (1, 12, 3)]:
        x = torch.randn(2, 3, 4, width + 2, dtype=torch.float64)[..., 1:-1].requires_grad_()  # not contiguous
        padded = torch.cat([x] * (3 + (left + right) // width), -1)
        shift = (-left) % width
        expected = padded[..., shift : shift + left + width + right]
        for channels_last in (True, False):
            got = wrap_pad(x, left, right, torch.float32, channels_last)
            got = got.permute(0, 3, 1, 2) if channels_last else got
            check(f"wrap_pad {(left, right, width)} channels_last={channels_last}", got, expected, 1e-7)
        grad = torch.randn(2, 4, left + width + right, 3)
        (gx,) = torch.autograd.grad(expected, [x], grad.permute(0, 3, 1, 2).double())
        check(f"wrap_fold {(left, right, width)}", wrap_fold(grad, left, width, torch.float32), gx, 1e-6)
else:
    raise SystemExit(f"unknown section {section!r}")
print("\\n".join(failures) or "ok")
sys.exit(1 if failures else 0)
"""


@pytest.mark.parametrize("section", ["gather", "sparse", "layout"])
def test_triton_kernels_in_the_interpreter_match_float64(section):
    """The Triton kernels, run by Triton's CPU interpreter, against the float64 PyTorch path, case by case: y, dx,
    dweight and dbias of the gather kernels ("gather") and of the sparse formulations' CUDA version with csr_rows
    alone ("sparse"), and the layout kernels alone ("layout")."""
    run_in_interpreter(INTERPRETER_SCRIPT, section)


@pytest.mark.parametrize("path", ["gather", "mix_first", "project_first"])
def test_cpu_bfloat16_autocast_runs_every_path(path, monkeypatch):
    monkeypatch.setattr(sconv_impl, "choose_path", lambda *args: path)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 16, generator=gen)
    weight = torch.randn(5, 4, 3, 4, generator=gen)
    bias = torch.randn(5, generator=gen)
    expected = spherical_conv(x.double(), weight.double(), bias.double(), kernel_rad=0.6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = spherical_conv(x, weight, bias, kernel_rad=0.6)
        low_input = spherical_conv(x.bfloat16(), weight, bias, kernel_rad=0.6)  # a 16-bit input, as in a network
    for got in (low, low_input):
        assert got.dtype == torch.bfloat16  # as nn.Conv2d's: the float32 bias does not promote the output
        assert torch.isfinite(got.float()).all()
        assert rel_err(got, expected) < 3e-2


def test_benchmark_tap_count_and_kernel_size():
    sys.path.insert(0, ROOT)
    from benchmarks.bench_sconv import crown_pixels_per_output, nearest_odd_square

    height, width, kernel_rad = 16, 32, 0.45
    alpha, _, _ = kernel_coordinates(colatitudes(height)[:, None, None], colatitudes(height)[None, :, None],
                                     (longitudes(width) - longitudes(width)[0])[None, None, :])  # fmt: skip
    direct = (alpha <= kernel_rad + RIM_TOLERANCE).sum().item() / height
    assert crown_pixels_per_output(height, width, kernel_rad, (3, 8)) == pytest.approx(direct)
    assert [nearest_odd_square(t) for t in (1, 4.9, 5.1, 9, 16.9, 17.1, 98.5)] == [1, 1, 3, 3, 3, 5, 9]


def test_weight_gradient_kernel_loads_16bit_tiles_as_vectors():
    """A performance property no numerical test sees: with C_in a multiple of 16, the bf16 weight-gradient kernel's
    input tile goes through the cp.async pipeline in 16-byte copies. Its k blocks start at multiples of 16 only if
    the kernel is told so; without that its k mask could change at any element and the tile loaded one bf16 at a
    time, outside the pipeline (3x slower on an H100 at 64->64 r=3 128x256)."""
    pytest.importorskip("triton", reason="the `test` extra installs triton where a wheel exists for the platform")
    from sconv.functional.kernels import gather as gather_kernels

    pointers = dict(x_ptr="*bf16", gy_ptr="*bf16", ge_ptr="*bf16", block_row="*i32", block_k="*i32", row_ptr="*i32",
                    tap_base="*i32")  # fmt: skip
    constexprs = dict(stride_w=1, BLOCK_O=64, BLOCK_N=128, BLOCK_J=64, CHANNELS_16=True, X_NCHW=False,
                      PRECISION="tf32")  # fmt: skip
    aligned = set(pointers) | {"n_in", "n_out", "out_h", "out_w"}
    ptx = ptx_for_h100(gather_kernels.grad_kernel_kernel, pointers, aligned, constexprs, 4)
    assert "wgmma" in ptx  # compiled for Hopper's tensor cores: the PTX is the one the H100 runs
    assert not re.search(r"ld\.global(\.\w+)*\.[bu]16\b", ptx), "scalar 16-bit global loads"
    assert re.search(r"cp\.async\.cg\.shared\.global[^;]*, 0x10[,;]", ptx), "no 16-byte cp.async copies"


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the Triton kernels)")


@cuda
@pytest.mark.parametrize("config", CONFIGS)
def test_gpu_triton_matches_float64_reference(config):
    batch, c_in, c_out, h, w, stride, r, size, mode = config
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(batch, c_in, h, w, generator=gen, dtype=torch.float64)
    weight = torch.randn(c_out, c_in, *size, generator=gen, dtype=torch.float64)
    bias = torch.randn(c_out, generator=gen, dtype=torch.float64)
    expected = reference.spherical_conv(x.numpy(), weight.numpy(), bias.numpy(), stride, mode, r)
    xd, wd = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out64 = spherical_conv(xd, wd, bias, stride=stride, padding_mode=mode, kernel_rad=r)
    grad = torch.randn(out64.shape, generator=gen, dtype=torch.float64)
    gx, gw = torch.autograd.grad(out64, [xd, wd], grad)
    xc, wc = x.float().cuda().requires_grad_(), weight.float().cuda().requires_grad_()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sconv_impl, "choose_path", lambda *args: "gather")
        calls = []
        launch = gather_impl._triton_gather_path
        patch.setattr(gather_impl, "_triton_gather_path", lambda *a: calls.append(1) or launch(*a))
        got = spherical_conv(xc, wc, bias.float().cuda(), stride=stride, padding_mode=mode, kernel_rad=r)
        got_gx, got_gw = torch.autograd.grad(got, [xc, wc], grad.float().cuda())
        assert calls, "the Triton path did not run"
        assert rel_err(got, expected) < 1e-4
        assert rel_err(got_gx, gx) < 1e-4 and rel_err(got_gw, gw) < 1e-4
        bc = bias.float().cuda().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = spherical_conv(xc, wc, bc, stride=stride, padding_mode=mode, kernel_rad=r)
        assert low.dtype == torch.bfloat16 and rel_err(low, expected) < 3e-2  # the bias does not promote it
        (low_gb,) = torch.autograd.grad(low, [bc], grad.cuda().to(low.dtype))
        assert low_gb.dtype == torch.float32 and rel_err(low_gb, grad.sum((0, 2, 3))) < 1e-2


@cuda
def test_gpu_triton_matches_pytorch_gather_path():
    """The Triton kernels against the pure-PyTorch gather path (the CPU one) on the same GPU, larger channel counts."""
    gen = torch.Generator().manual_seed(5)
    for batch, c_in, c_out, h, w, r, size in [(3, 64, 64, 32, 64, 3 * math.pi / 32, (4, 8)),
                                              (2, 4, 64, 32, 64, math.pi / 16, (8, 16)),
                                              (2, 32, 128, 16, 128, math.pi / 8, (4, 8)),  # 128 (o) per step
                                              (2, 128, 1, 32, 64, math.pi / 16, (4, 8))]:  # fmt: skip
        x = torch.randn(batch, c_in, h, w, generator=gen).cuda().requires_grad_()
        weight = torch.randn(c_out, c_in, *size, generator=gen).cuda().requires_grad_()
        outs = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sconv_impl, "choose_path", lambda *args: "gather")
            for fast in (True, False):
                patch.setattr(sconv_impl, "triton_available", lambda device, dtype, fast=fast: fast)
                y = spherical_conv(x, weight, kernel_rad=r)
                outs.append((y, *torch.autograd.grad(y.square().sum(), [x, weight])))
            # bfloat16 (its own tile sizes in the backward kernels) against the float32 PyTorch path
            patch.setattr(sconv_impl, "triton_available", lambda device, dtype: True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = spherical_conv(x, weight, kernel_rad=r)
            outs.append((y, *torch.autograd.grad(y.float().square().sum(), [x, weight])))
        for a, b in zip(outs[0], outs[1]):
            assert rel_err(a, b) < 1e-5
        for a, b in zip(outs[2], outs[1]):
            assert rel_err(a, b) < 3e-2


@cuda
def test_gpu_triton_edge_cases():
    weight = torch.randn(6, 5, 3, 8, device="cuda")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sconv_impl, "choose_path", lambda *args: "gather")
        # batch 0 and a non-contiguous (channels-last, sliced) input
        empty = spherical_conv(torch.randn(0, 5, 8, 16, device="cuda"), weight, kernel_rad=0.5)
        assert empty.shape == (0, 6, 8, 16)
        base = torch.randn(2, 5, 8, 20, device="cuda").to(memory_format=torch.channels_last)[..., 2:18]
        torch.testing.assert_close(spherical_conv(base, weight, kernel_rad=0.5),
                                   spherical_conv(base.contiguous(), weight, kernel_rad=0.5))  # fmt: skip


@cuda
@pytest.mark.parametrize("path", ["gather", "mix_first", "project_first"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_fwd_bwd_captures_in_a_cuda_graph(path, dtype, monkeypatch):
    """Every CUDA path runs inside a CUDA graph (no host synchronisation, no allocation that outlives its pool): a
    captured fwd+bwd replayed on new data gives the eager results."""
    monkeypatch.setattr(sconv_impl, "choose_path", lambda *args: path)
    weight = torch.randn(16, 8, 3, 8, device="cuda", requires_grad=True)
    bias = torch.randn(16, device="cuda", requires_grad=True)
    x = torch.randn(2, 8, 16, 32, device="cuda", requires_grad=True)

    def step(x):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            y = spherical_conv(x, weight, bias, kernel_rad=0.4)
        assert y.dtype == dtype  # the float32 bias does not promote a bfloat16 output
        return (y, *torch.autograd.grad(y.float().square().sum(), [x, weight, bias]))

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(x)
    for _ in range(2):
        with torch.no_grad():
            x.copy_(torch.randn_like(x))
        graph.replay()
        for got, want in zip(captured, step(x.detach().clone().requires_grad_())):
            torch.testing.assert_close(got, want)

"""Spherical padding, pooling and MSE against slow direct evaluations of the spec's formulas (float64)."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from sconv.functional.common import pixel_solid_angle
from sconv.functional.smse import sphere_mse
from sconv.functional.spad import spherical_pad
from sconv.functional.spool import pool_window_widths, spherical_pool
from sconv.module.smse import SphereMSE
from sconv.module.spad import SphericalPad
from sconv.module.spool import SphericalPooling


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def rel_err(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


# ---------------------------------------------------------------- direct references: explicit loops over pixels


def direct_pad(x, pad):
    left, right, top, bottom = pad
    b, c, h, w = x.shape
    out = torch.empty(b, c, h + top + bottom, w + left + right, dtype=x.dtype)
    for row in range(-top, h + bottom):
        if row < 0:  # above the north pole: row -1-k is input row k seen from the other side
            src_row, shift = -1 - row, w // 2
        elif row >= h:  # below the south pole: row h+k is input row h-1-k seen from the other side
            src_row, shift = 2 * h - 1 - row, w // 2
        else:
            src_row, shift = row, 0
        for col in range(-left, w + right):
            out[:, :, row + top, col + left] = x[:, :, src_row, (col + shift) % w]
    return out


def direct_window_width(h, w, i):
    theta = (i + 0.5) * math.pi / (h // 2)
    return min(w, max(2, 2 * math.floor(w / (2 * h * math.sin(theta)) + 0.5)))


def direct_pool(x, mode):
    b, c, h, w = x.shape
    out = torch.empty(b, c, h // 2, w // 2, dtype=x.dtype)
    for i in range(h // 2):
        n = direct_window_width(h, w, i)
        rows = [2 * i, 2 * i + 1]
        row_weight = torch.tensor([math.sin((r + 0.5) * math.pi / h) for r in rows], dtype=x.dtype)
        for j in range(w // 2):
            cols = [(2 * j - n // 2 + 1 + t) % w for t in range(n)]
            window = x[:, :, rows][:, :, :, cols]  # [b, c, 2, n]
            if mode == "max":
                out[:, :, i, j] = window.amax(dim=(2, 3))
            else:
                out[:, :, i, j] = (window * row_weight[:, None]).sum(dim=(2, 3)) / (n * row_weight.sum())
    return out


def direct_sphere_mse(x, y):
    b, c, h, w = x.shape
    total = 0.0
    for i in range(h):
        area = (2 * math.pi / w) * (math.cos(i * math.pi / h) - math.cos((i + 1) * math.pi / h))
        for j in range(w):
            total += area * ((x[:, :, i, j] - y[:, :, i, j]) ** 2).sum().item()
    return total / b


def random_sizes(count, even_w, seed):
    rng = random.Random(seed)
    sizes = set()
    while len(sizes) < count:
        h = rng.randint(1, 8) * 2
        w = rng.randint(1, 16) * 2 if even_w else rng.randint(2, 20)
        sizes.add((h, w))
    return sorted(sizes)


# ---------------------------------------------------------------- padding


PAD_SIZES = [(2, 2), (2, 3), (3, 4), (5, 7), (4, 8), (6, 6), (7, 10), (8, 16), (9, 20)] + random_sizes(6, False, 0)


@pytest.mark.parametrize("h,w", PAD_SIZES)
def test_pad_matches_direct(h, w):
    rng = random.Random(h * 100 + w)
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    for _ in range(4):
        left, right = rng.randint(0, w), rng.randint(0, w)
        top, bottom = (rng.randint(0, h), rng.randint(0, h)) if w % 2 == 0 else (0, 0)
        pad = (left, right, top, bottom)
        torch.testing.assert_close(spherical_pad(x, pad), direct_pad(x, pad), rtol=0, atol=0)


def test_pad_samples_the_function_beyond_the_pole():
    # Sampling a function of the unit vector, then padding, equals sampling it on the extended grid: the pole
    # continuation theta -> -theta (or 2 pi - theta) is the same point as (theta, phi + pi).
    h, w, pad = 6, 12, (3, 2, 4, 5)

    def sample(theta, phi):
        t, p = torch.meshgrid(theta, phi, indexing="ij")
        u = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()])
        return (u[0] + 2 * u[1] + 3 * u[2] ** 2 + u[0] * u[2])[None, None]

    rows = torch.arange(-pad[2], h + pad[3], dtype=torch.float64)
    cols = torch.arange(-pad[0], w + pad[1], dtype=torch.float64)
    grid = sample(
        (torch.arange(h, dtype=torch.float64) + 0.5) * math.pi / h,
        (torch.arange(w, dtype=torch.float64) + 0.5) * 2 * math.pi / w,
    )
    extended = sample((rows + 0.5) * math.pi / h, (cols + 0.5) * 2 * math.pi / w)
    torch.testing.assert_close(spherical_pad(grid, pad), extended, rtol=0, atol=1e-12)


def test_pad_int_and_module():
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64)
    torch.testing.assert_close(spherical_pad(x, 2), direct_pad(x, (2, 2, 2, 2)), rtol=0, atol=0)
    module = SphericalPad((1, 2, 3, 0))
    assert "pad=(1, 2, 3, 0)" in repr(module)
    torch.testing.assert_close(module(x), direct_pad(x, (1, 2, 3, 0)), rtol=0, atol=0)


def test_pad_gradcheck():
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spherical_pad(t, (2, 1, 3, 2)), (x,))


# ---------------------------------------------------------------- pooling


POOL_SIZES = [(2, 2), (2, 4), (4, 2), (2, 6), (4, 8), (6, 4), (8, 16), (10, 6), (16, 32), (12, 40)] + random_sizes(
    8, True, 1
)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("h,w", POOL_SIZES)
def test_pool_matches_direct(h, w, mode):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    assert rel_err(spherical_pool(x, mode), direct_pool(x, mode)) < 1e-12


def test_pool_window_widths_match_formula_and_area():
    for h, w in [(4, 8), (16, 32), (64, 128), (256, 512), (8, 64), (32, 8)]:
        widths = pool_window_widths(h, w)
        assert widths.tolist() == [direct_window_width(h, w, i) for i in range(h // 2)]
        # Equal solid angle: n_i sin(theta'_i) stays within one column of W / H (rounding to an even width).
        sin_theta = torch.sin((torch.arange(h // 2, dtype=torch.float64) + 0.5) * math.pi / (h // 2))
        unclipped = (widths > 2) & (widths < w)
        assert ((widths * sin_theta - w / h).abs() <= sin_theta + 1e-12)[unclipped].all()


def test_pool_equator_of_2to1_panorama_is_planar_2x2():
    h, w = 8, 16  # output rows 1 and 2 straddle the equator
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    equator = slice(1, 3)
    torch.testing.assert_close(spherical_pool(x, "max")[..., equator, :], F.max_pool2d(x, 2)[..., equator, :])
    row_weight = torch.sin((torch.arange(h, dtype=torch.float64) + 0.5) * math.pi / h)[:, None]
    weighted_mean = F.avg_pool2d(x * row_weight, 2) / F.avg_pool2d(row_weight.expand(h, w)[None, None], 2)
    torch.testing.assert_close(spherical_pool(x, "avg")[..., equator, :], weighted_mean[..., equator, :])


def test_pool_polar_window_reaches_across_the_seam():
    # 8 x 16: top output row has n = 2 floor(16 / (16 sin(pi/8)) + 1/2) = 6, columns 2j-2 .. 2j+3 (mod 16).
    x = torch.zeros(1, 1, 8, 16, dtype=torch.float64)
    x[0, 0, 1, 0] = 1.0
    lit = spherical_pool(x, "max")[0, 0]
    expected = torch.zeros(4, 8, dtype=torch.float64)
    expected[0, [0, 1, 7]] = 1.0  # windows -2..3, 0..5 and 12..17
    torch.testing.assert_close(lit, expected, rtol=0, atol=0)
    # 2 x 6: one row at the equator with n = 2 floor(6 / 4 + 1/2) = 4: columns 2j-1 .. 2j+2 (row 1 holds 6..11).
    x = torch.arange(12, dtype=torch.float64).reshape(1, 1, 2, 6)
    torch.testing.assert_close(spherical_pool(x, "max")[0, 0, 0], torch.tensor([11.0, 10.0, 11.0], dtype=x.dtype))


def test_pool_avg_of_constant_is_constant():
    x = torch.full((1, 2, 16, 32), 3.25, dtype=torch.float64)
    torch.testing.assert_close(spherical_pool(x, "avg"), torch.full((1, 2, 8, 16), 3.25, dtype=torch.float64))


@pytest.mark.parametrize("h,w", [(8, 16), (16, 32), (12, 40)])
def test_max_pool_with_gradient_matches_direct(h, w):
    # With a gradient needed, max pooling gathers each window's winner: same values as the direct max, and the gradient
    # of the sum of the outputs counts how many windows each input pixel wins (randn values: no ties).
    x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    out = spherical_pool(x, "max")
    assert rel_err(out, direct_pool(x.detach(), "max")) < 1e-12
    (grad,) = torch.autograd.grad(out.sum(), x)
    reference = torch.autograd.grad(direct_pool(x, "max").sum(), x)[0]
    assert torch.equal(grad, reference)
    assert grad.sum() == out.numel()


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_gradcheck(mode):
    # randn values are distinct, so max has a well-defined gradient.
    for h, w in [(4, 6), (6, 8)]:
        x = torch.randn(2, 2, h, w, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, m=mode: spherical_pool(t, m), (x,))


def test_pool_module():
    x = torch.randn(2, 1, 8, 12, dtype=torch.float64)
    for mode in ["max", "avg"]:
        module = SphericalPooling(mode)
        assert f"mode='{mode}'" in repr(module)
        torch.testing.assert_close(module(x), direct_pool(x, mode))
    assert "mode='max'" in repr(SphericalPooling())


# ---------------------------------------------------------------- MSE


@pytest.mark.parametrize("h,w", [(2, 2), (3, 5), (8, 16), (9, 4), (16, 32)])
def test_sphere_mse_matches_direct(h, w):
    x, y = torch.randn(2, 3, 2, h, w, dtype=torch.float64)
    assert abs(sphere_mse(x, y).item() - direct_sphere_mse(x, y)) <= 1e-12 * direct_sphere_mse(x, y)


def test_solid_angles_cover_the_sphere_and_constant_error_gives_4pi():
    for h, w in [(2, 2), (3, 7), (90, 180), (256, 512)]:
        assert abs(w * pixel_solid_angle(h, w).sum().item() - 4 * math.pi) < 1e-12
    x = torch.zeros(3, 1, 10, 20, dtype=torch.float64)
    assert abs(sphere_mse(x + 0.5, x).item() - 4 * math.pi * 0.25) < 1e-12


def test_sphere_mse_gradcheck_and_module():
    x, y = torch.randn(2, 2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sphere_mse, (x, y))
    loss = SphereMSE(3, 4)
    assert "h=3, w=4" in repr(loss)
    torch.testing.assert_close(loss(x, y), sphere_mse(x, y))


def test_sphere_mse_empty_batch_is_zero():
    x = torch.randn(0, 2, 4, 8, requires_grad=True)
    loss = sphere_mse(x, torch.zeros_like(x))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == x.shape


# ---------------------------------------------------------------- shared behaviour: batch, layout, dtypes, compile


OPS = {
    "pad": lambda x: spherical_pad(x, (2, 3, 1, 2)),
    "pool_max": lambda x: spherical_pool(x, "max"),
    "pool_avg": lambda x: spherical_pool(x, "avg"),
    "mse": lambda x: sphere_mse(x, x.flip(-1).detach() * 0.5),
}
DIRECT = {
    "pad": lambda x: direct_pad(x, (2, 3, 1, 2)),
    "pool_max": lambda x: direct_pool(x, "max"),
    "pool_avg": lambda x: direct_pool(x, "avg"),
    "mse": lambda x: torch.tensor(direct_sphere_mse(x, x.flip(-1) * 0.5), dtype=x.dtype),
}


@pytest.mark.parametrize("name", OPS)
def test_batch_sizes_and_non_contiguous(name):
    op = OPS[name]
    for b in [0, 1]:
        x = torch.randn(b, 2, 6, 10, dtype=torch.float64, requires_grad=True)
        out = op(x)
        out.sum().backward()
        assert x.grad.shape == x.shape
        if b:
            torch.testing.assert_close(out, DIRECT[name](x.detach()))
    base = torch.randn(2, 6, 10, 3, dtype=torch.float64)
    x = base.permute(0, 3, 1, 2)[:, ::2]  # channels-last strides, every other channel
    assert not x.is_contiguous()
    torch.testing.assert_close(op(x), op(x.contiguous()))


@pytest.mark.parametrize("name", OPS)
def test_float32_matches_float64(name):
    x = torch.randn(2, 3, 8, 16, dtype=torch.float64)
    out32 = OPS[name](x.float())
    assert out32.dtype == torch.float32
    assert rel_err(out32.double(), DIRECT[name](x)) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", OPS)
def test_autocast_runs_finite(name, dtype):
    x = torch.randn(2, 3, 8, 16)
    with torch.autocast("cpu", dtype=dtype):
        out = OPS[name](x)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("name", OPS)
def test_compile(name, backend):
    torch._dynamo.reset()
    compiled = torch.compile(OPS[name], backend=backend, fullgraph=True)
    for shape in [(2, 3, 8, 16), (1, 2, 6, 10)]:  # a second size: the geometry must follow it
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        out = compiled(x)
        torch.testing.assert_close(out, DIRECT[name](x.detach()))
        (grad,) = torch.autograd.grad(out.sum(), x)
        (expected,) = torch.autograd.grad(OPS[name](x).sum(), x)
        torch.testing.assert_close(grad, expected)


@pytest.mark.slow  # one cold inductor compile: ~2 s warm, ~20 s with an empty compile cache
def test_compile_inductor():
    torch._dynamo.reset()

    def pipeline(x, y):
        return sphere_mse(spherical_pool(spherical_pad(x, (1, 1, 2, 2)), "avg"), y) + spherical_pool(x, "max").sum()

    x, y = torch.randn(2, 3, 8, 16), torch.randn(2, 3, 6, 9)
    torch.testing.assert_close(torch.compile(pipeline)(x, y), pipeline(x, y))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x: spherical_pad(x.numpy(), (1, 1, 1, 1)), TypeError, "input"),
        (lambda x: spherical_pad(x[0], (1, 1, 1, 1)), ValueError, "input"),
        (lambda x: spherical_pad(x.long(), (1, 1, 1, 1)), TypeError, "input"),
        (lambda x: spherical_pad(x, (1, 1, 1)), TypeError, "pad"),
        (lambda x: spherical_pad(x, (1.0, 1, 1, 1)), TypeError, "pad"),
        (lambda x: spherical_pad(x, "same"), TypeError, "pad"),
        (lambda x: spherical_pad(x, (-1, 0, 0, 0)), ValueError, "pad"),
        (lambda x: spherical_pad(x, (0, 11, 0, 0)), ValueError, "pad"),
        (lambda x: spherical_pad(x, (0, 0, 7, 0)), ValueError, "pad"),
        (lambda x: spherical_pad(x[..., :9], (0, 0, 0, 1)), ValueError, "pad.*even W"),
        (lambda x: SphericalPad((1, 2)), TypeError, "pad"),
        (lambda x: spherical_pool(x[..., :5, :], "max"), ValueError, "input.*even"),
        (lambda x: spherical_pool(x[..., :9], "avg"), ValueError, "input.*even"),
        (lambda x: spherical_pool(x[..., :1, :], "avg"), ValueError, "input"),
        (lambda x: spherical_pool(x, "min"), ValueError, "mode"),
        (lambda x: SphericalPooling("mean"), ValueError, "mode"),
        (lambda x: spherical_pool(x.int(), "max"), TypeError, "input"),
        (lambda x: sphere_mse(x, x[:, :1]), ValueError, "target"),
        (lambda x: sphere_mse(x, [1.0]), TypeError, "target"),
        (lambda x: sphere_mse(x[0], x[0]), ValueError, "input"),
        (lambda x: SphereMSE(6, 8)(x, x), ValueError, "input.*6 x 8"),
        (lambda x: SphereMSE(6, 0), ValueError, "w"),
        (lambda x: SphereMSE(6.0, 10), TypeError, "h"),
    ],
)
def test_bad_input_raises(call, error, match):
    x = torch.randn(2, 3, 6, 10)
    with pytest.raises(error, match=match):
        call(x)

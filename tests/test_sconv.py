"""spherical_conv / SphericalConv against the spec: a direct float64 evaluation, analytic results and properties."""

import math
import random

import numpy as np
import pytest
import torch

import sconv.functional.conv_plans as conv_plans
import sconv.functional.sconv as sconv_impl
from sconv.functional.common import pixel_solid_angle
from sconv.functional.crown import crown_taps, smallest_radius
from sconv.functional.sconv import spherical_conv
from sconv.module.sconv import SphericalConv
from tests import reference

PATHS = ("gather", "mix_first", "project_first")
MODES = ("sphere", "zeros", "reflect", "replicate", -1.5)


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Forces one of the three formulations, so that each is checked against the reference."""
    monkeypatch.setattr(sconv_impl, "choose_path", lambda *args: request.param)
    return request.param


def rel_err(actual, expected):
    """max |actual - expected| / max |expected|: NaN (so every `< tol` check fails) if either side is not finite."""
    actual, expected = actual.detach().double().cpu().numpy(), np.asarray(expected)
    if not (np.isfinite(actual).all() and np.isfinite(expected).all()):
        return math.nan
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-300)


def random_config(rng):
    """A random valid configuration: sizes from 2 up (W not always 2H, odd W), radii from tiny to pi, strides."""
    h = rng.randint(2, 8)
    w = rng.choice([2 * h, rng.randint(2, 13)])
    sh = rng.choice([s for s in range(1, h + 1) if h % s == 0])
    sw = rng.choice([s for s in range(1, w + 1) if w % s == 0])
    low = smallest_radius(h, w, (sh, sw))
    r = rng.choice([low + 1e-6, rng.uniform(low, math.pi), math.pi, rng.uniform(low, max(low, 1.0))])
    r = max(r, 1e-3)
    kh, kw = rng.choice([1, 2, 3, 5]), rng.choice([1, 2, 4, 7])
    mode = rng.choice(MODES)
    if mode == "reflect":  # torch's reflect padding needs pad < W: a 2-wide strip reflects onto itself only
        w = max(w, 3)
        sw = 1 if w % sw else sw
        r = max(r, smallest_radius(h, w, (sh, sw)) + 1e-6)
    return h, w, (sh, sw), r, (kh, kw), mode, rng.random() < 0.5


def test_matches_direct_evaluation(path):
    rng = random.Random(1234)
    for case in range(30):
        h, w, stride, r, ksize, mode, use_bias = random_config(rng)
        gen = torch.Generator().manual_seed(rng.randrange(2**31))
        x = torch.randn(2, 2, h, w, generator=gen, dtype=torch.float64)
        weight = torch.randn(3, 2, *ksize, generator=gen, dtype=torch.float64)
        bias = torch.randn(3, generator=gen, dtype=torch.float64) if use_bias else None
        expected = reference.spherical_conv(x.numpy(), weight.numpy(), None if bias is None else bias.numpy(),
                                            stride, mode, r)
        got64 = spherical_conv(x, weight, bias, stride=stride, padding_mode=mode, kernel_rad=r)
        got32 = spherical_conv(x.float(), weight.float(), None if bias is None else bias.float(), stride=stride,
                               padding_mode=mode, kernel_rad=r)
        config = f"case {case}: H={h} W={w} stride={stride} r={r:.4g} kernel={ksize} mode={mode} bias={use_bias}"
        assert got64.shape == expected.shape, config
        err64, err32 = rel_err(got64, expected), rel_err(got32, expected)
        assert err64 < 1e-6 and err32 < 1e-4, f"{config}: float64 {err64:.3g}, float32 {err32:.3g}"


@pytest.mark.parametrize(
    "h, w, stride, r, ksize",
    [
        (9, 18, (3, 3), 0.9, (3, 4)),  # odd stride: output centres on input centres, beta undefined at q == p
        (8, 16, (1, 1), math.pi, (4, 6)),  # every antipode is a grid point and in the crown
        (4, 8, (1, 1), 1e-4, (3, 5)),  # crown far below one row spacing: the pixel itself
        (6, 12, (1, 1), 2 * math.pi / 12, (2, 3)),  # r a multiple of the column spacing: points on the rim
        (5, 7, (5, 7), math.pi, (1, 1)),  # a single output pixel
    ],
)
def test_special_configurations(path, h, w, stride, r, ksize):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, h, w, generator=gen, dtype=torch.float64)
    weight = torch.randn(2, 2, *ksize, generator=gen, dtype=torch.float64)
    expected = reference.spherical_conv(x.numpy(), weight.numpy(), None, stride, "sphere", r)
    assert rel_err(spherical_conv(x, weight, stride=stride, kernel_rad=r), expected) < 1e-6


def test_longitude_shift_equivariance(path):
    gen = torch.Generator().manual_seed(3)
    for h, w, stride in [(6, 12, (1, 1)), (8, 16, (2, 2)), (6, 18, (3, 3)), (4, 12, (1, 4))]:
        x = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
        weight = torch.randn(2, 3, 3, 5, generator=gen, dtype=torch.float64)
        y = spherical_conv(x, weight, stride=stride, kernel_rad=1.1)
        for shift in (1, 2):
            y_shifted = spherical_conv(x.roll(shift * stride[1], 3), weight, stride=stride, kernel_rad=1.1)
            torch.testing.assert_close(y_shifted, y.roll(shift, 3), rtol=0, atol=1e-12)


def continuous_isotropic_conv(kernel, bump, distance, r, n=600):
    """(1/|cap|) * integral over the cap of radius r around p of K(alpha) f(q), f a Gaussian bump at distance D from p.

    In p's frame, q = (alpha, beta) and cos d(q, g) = cos a cos D + sin a sin D cos b (law of cosines), so the
    integral is a 2-D midpoint rule in (alpha, beta) with the area element sin(alpha).
    """
    alpha = (np.arange(n) + 0.5) * r / n
    beta = (np.arange(n) + 0.5) * 2 * math.pi / n
    a, b = np.meshgrid(alpha, beta, indexing="ij")
    cos_d = np.cos(a) * np.cos(distance) + np.sin(a) * np.sin(distance) * np.cos(b)
    f = bump(np.arccos(np.clip(cos_d, -1, 1)))
    area = np.sin(a)
    return (kernel(a) * f * area).sum() / area.sum()


def test_rotation_equivariance_error_shrinks_with_resolution():
    """A beta-constant kernel on a bump: the output depends only on the distance to the bump's centre, up to a
    discretisation error that shrinks with resolution (the exact continuous operator is rotation-equivariant)."""
    r, sigma = math.pi / 6, 0.35
    centre = np.array([math.sin(1.0) * math.cos(0.7), math.sin(1.0) * math.sin(0.7), math.cos(1.0)])
    kernel_nodes = np.array([1.0, 0.4, -0.3])  # K(alpha) linear between nodes at 0, r/2, r

    def kernel(alpha):
        return np.interp(alpha, np.linspace(0, r, 3), kernel_nodes)

    def bump(d):
        return np.exp(-(d**2) / (2 * sigma**2))

    errors = []
    for h in (16, 32, 64):
        w = 2 * h
        theta, phi = reference.grid(h, w)
        t, p = np.meshgrid(theta, phi, indexing="ij")
        u = reference.unit(t, p)
        dist = np.arctan2(np.linalg.norm(np.cross(u, centre), axis=-1), u @ centre)
        x = torch.from_numpy(bump(dist))[None, None]
        weight = torch.from_numpy(kernel_nodes).view(1, 1, 3, 1)
        y = spherical_conv(x, weight, kernel_rad=r)[0, 0].numpy()
        # Compare at a sample of pixels, spread over all distances from the bump.
        sample = np.argsort(dist.ravel())[:: max(1, dist.size // 60)]
        exact = np.array([continuous_isotropic_conv(kernel, bump, dist.ravel()[k], r) for k in sample])
        errors.append(np.abs(y.ravel()[sample] - exact).max())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02, errors


def test_isotropic_gaussian_kernel_on_a_lit_pixel():
    """weight[a, b] = exp(-alpha_a^2 / 2 sigma^2): y(p) * sum_{N(p)} w / w_q0 is the spherical Gaussian of d(p, q0),
    up to the linear interpolation error sigma^-2 dalpha^2 / 8 (a bound from the kernel's second derivative)."""
    h, w, r, sigma, kh = 24, 48, 0.8, 0.3, 40
    q0 = (5, 17)  # near the pole, away from the seam
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[0, 0, q0[0], q0[1]] = 1.0
    alpha_nodes = torch.arange(kh, dtype=torch.float64) * r / (kh - 1)
    weight = torch.exp(-(alpha_nodes**2) / (2 * sigma**2)).view(1, 1, kh, 1).expand(1, 1, kh, 3).contiguous()
    y = spherical_conv(x, weight, kernel_rad=r)[0, 0].numpy()

    theta, phi = reference.grid(h, w)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    u = reference.unit(t, p)
    uq = u[q0]
    d = np.arctan2(np.linalg.norm(np.cross(u, uq), axis=-1), u @ uq)
    # The normaliser sum_{q in N(p)} sin(theta_q), per output pixel, by brute force.
    norm = np.array([[np.sin(t[(np.arctan2(np.linalg.norm(np.cross(u, u[i, j]), axis=-1), u @ u[i, j])
                                <= r + 1e-9)]).sum() for j in range(w)] for i in range(h)])
    inside = d <= r
    recovered = y * norm / math.sin(theta[q0[0]])
    bound = (r / (kh - 1)) ** 2 / (8 * sigma**2)
    assert np.abs(recovered[inside] - np.exp(-d[inside] ** 2 / (2 * sigma**2))).max() <= bound
    assert np.all(y[~inside] == 0)


def test_pixel_areas_sum_to_4pi():
    for h, w in [(2, 2), (3, 7), (64, 128), (257, 100)]:
        assert abs(pixel_solid_angle(h, w).sum().item() * w - 4 * math.pi) < 1e-12


def test_gradcheck(path):
    gen = torch.Generator().manual_seed(5)
    for h, w, stride, mode, r, ksize in [(4, 6, (1, 2), "sphere", 1.2, (2, 3)), (4, 5, (2, 1), "reflect", 0.9, (3, 2)),
                                         (3, 4, (1, 1), 0.5, math.pi, (1, 4))]:
        x = torch.randn(2, 2, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(2, 2, *ksize, generator=gen, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda x, wt, b, stride=stride, mode=mode, r=r: spherical_conv(
                x, wt, b, stride=stride, padding_mode=mode, kernel_rad=r
            ),
            (x, weight, bias),
        )


def test_fuzz_finite():
    """The original produced NaN near the poles: a few hundred random valid configurations, forward and backward."""
    rng = random.Random(99)
    for _ in range(300):
        h, w, stride, r, ksize, mode, use_bias = random_config(rng)
        h, w = h * rng.choice([1, 2]), w * rng.choice([1, 2])
        r = max(r, smallest_radius(h, w, stride) + 1e-6)
        x = torch.randn(1, 2, h, w, requires_grad=True)
        weight = torch.randn(2, 2, *ksize, requires_grad=True)
        y = spherical_conv(x, weight, torch.randn(2) if use_bias else None, stride=stride, padding_mode=mode,
                           kernel_rad=r)
        y.square().sum().backward()
        config = f"H={h} W={w} stride={stride} r={r:.4g} kernel={ksize} mode={mode}"
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(weight.grad).all(), config


def test_batch_sizes_noncontiguous_and_dtypes(path):
    weight = torch.randn(3, 2, 2, 4, dtype=torch.float64)
    for batch in (0, 1, 3):
        x = torch.randn(batch, 2, 6, 12, dtype=torch.float64)
        y = spherical_conv(x, weight, kernel_rad=0.8)
        assert y.shape == (batch, 3, 6, 12)
    x = torch.randn(2, 6, 12, 2, dtype=torch.float64).permute(0, 3, 1, 2)  # channels-last memory, non-contiguous
    assert not x.is_contiguous()
    torch.testing.assert_close(spherical_conv(x, weight, kernel_rad=0.8),
                               spherical_conv(x.contiguous(), weight, kernel_rad=0.8))
    y32 = spherical_conv(x.float(), weight.float(), kernel_rad=0.8)
    assert y32.dtype == torch.float32


def test_bf16_autocast_runs_and_is_finite():
    layer = SphericalConv(2, 3, kernel_rad=0.8, kernel_size=(3, 4), bias=True)
    x = torch.randn(2, 2, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().sum().backward()
    assert torch.isfinite(y.float()).all() and torch.isfinite(layer.weight.grad).all()
    torch.testing.assert_close(y.float(), layer(x), rtol=0.05, atol=0.05)


def test_torch_compile():
    layer = SphericalConv(2, 3, kernel_rad=0.8, kernel_size=(3, 4), stride=2, bias=True).double()
    x = torch.randn(2, 2, 8, 16, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(layer, backend="aot_eager")
    y = compiled(x)
    y.sum().backward()
    torch.testing.assert_close(y, layer(x))


def test_module_original_call_and_defaults():
    layer = SphericalConv(4, 64, np.pi / 32, kernel_size=(8, 16), kernel_sr=None)
    assert layer.kernel_size == (8, 16) and layer.weight.shape == (64, 4, 8, 16) and layer.bias is None
    assert SphericalConv(4, 8, kernel_size=(8, 16)).kernel_size == (8, 16)
    default = SphericalConv(2, 2)
    assert default.kernel_size == (15, 30) and abs(default.kernel_rad - math.pi / 12) < 1e-15
    sr = SphericalConv(2, 2, kernel_rad=math.pi / 4, kernel_sr=(8 / (math.pi / 4), 8 / (2 * math.pi)))
    assert sr.kernel_size == (8, 8)
    bound = 1 / math.sqrt(4 * 8 * 16)
    assert layer.weight.abs().max() <= bound
    assert "kernel_rad" in repr(layer) and "(8, 16)" in repr(layer)
    strided = SphericalConv(4, 6, math.pi / 8, kernel_size=(3, 8), stride=2, bias=True)
    assert strided(torch.randn(2, 4, 16, 32)).shape == (2, 6, 8, 16)


def test_geometry_is_cached_and_vectorised():
    crown_taps.cache_clear()
    a = crown_taps(32, 64, 0.3, (1, 1), (4, 8))
    assert crown_taps(32, 64, 0.3, (1, 1), (4, 8)) is a
    assert crown_taps.cache_info().hits == 1
    # Every output row's normalised coefficients sum to one: the quadrature weights w_q / sum w_q.
    sums = torch.zeros(32, dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(32), a.taps_per_row()), a.coef.sum(1))
    torch.testing.assert_close(sums, torch.ones(32, dtype=torch.float64))


BAD_CALLS = [
    (lambda: spherical_conv(torch.randn(2, 8, 16), torch.randn(1, 2, 2, 2)), ValueError, "input"),
    (lambda: spherical_conv(torch.randn(1, 3, 8, 16), torch.randn(1, 2, 2, 2)), ValueError, "C_in"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2)), ValueError, "weight"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), "w"), TypeError, "weight"),
    (lambda: spherical_conv([[1.0]], torch.randn(1, 2, 2, 2)), TypeError, "input"),
    (lambda: spherical_conv(torch.ones(1, 2, 8, 16, dtype=torch.long), torch.randn(1, 2, 2, 2)), TypeError, "input"),
    (lambda: spherical_conv(torch.randn(1, 2, 1, 16), torch.randn(1, 2, 2, 2)), ValueError, "input"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), stride=3), ValueError, "stride"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), stride=0), ValueError, "stride"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), stride=1.5), TypeError, "stride"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), kernel_rad=0), ValueError,
     "kernel_rad"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), kernel_rad=-1), ValueError,
     "kernel_rad"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), kernel_rad=3.2), ValueError,
     "kernel_rad"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), kernel_rad="pi"), TypeError,
     "kernel_rad"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), stride=2, kernel_rad=1e-3),
     ValueError, "kernel_rad >= "),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), padding_mode="circular"),
     ValueError, "padding_mode"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), padding_mode=None), TypeError,
     "padding_mode"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), padding="same"), ValueError,
     "padding"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), torch.randn(3)), ValueError, "bias"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16).double(), torch.randn(1, 2, 2, 2)), TypeError,
     "weight has dtype torch.float32 but input has torch.float64: give both the same"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16).bfloat16(), torch.randn(1, 2, 2, 2)), TypeError,
     "weight has dtype torch.float32 but input has torch.bfloat16.*only under torch.autocast"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.ones(1, 2, 2, 2, dtype=torch.int64)), TypeError,
     "weight must be a dense floating-point tensor, got torch.int64"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), torch.ones(1, dtype=torch.int32)),
     TypeError, "bias must be a dense floating-point tensor, got torch.int32"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), torch.ones(1, dtype=torch.float64)),
     TypeError, "bias has dtype torch.float64 but input has torch.float32"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2), [0.5]), TypeError,
     "bias must be a torch.Tensor or None"),
    (lambda: spherical_conv(torch.randn(1, 0, 8, 16), torch.randn(1, 0, 2, 2)), ValueError, r"C_in >= 1\), got C_in=0"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16), torch.randn(1, 2, 2, 2, device="meta")), ValueError,
     "weight is on meta but input is on cpu"),
    (lambda: spherical_conv(torch.randn(1, 2, 8, 16).to_sparse(), torch.randn(1, 2, 2, 2)), TypeError,
     "input must be a dense"),
    (lambda: SphericalConv(2, 3, kernel_size=2)(torch.randn(1, 2, 8, 16, dtype=torch.float64)), TypeError,
     "weight has dtype torch.float32 but input has torch.float64"),
    (lambda: SphericalConv(2, 3, kernel_sr=(2.0, 2.0), kernel_size=(2, 2)), ValueError, "exactly one"),
    (lambda: SphericalConv(2, 3, kernel_sr=None), ValueError, "exactly one"),
    (lambda: SphericalConv(2, 3, kernel_rad=0.1, kernel_sr=(1.0, 1.0)), ValueError, "kernel_size"),
    (lambda: SphericalConv(0, 3), ValueError, "in_channels"),
    (lambda: SphericalConv(2, 3, kernel_size=(0, 2)), ValueError, "kernel_size"),
    (lambda: SphericalConv(2, 3, padding_mode="wrap"), ValueError, "padding_mode"),
]


@pytest.mark.parametrize("call, error, words", BAD_CALLS)
def test_bad_input_names_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_mixed_dtypes_under_cpu_autocast_are_accepted():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 8, 16, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 4, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    expected = reference.spherical_conv(x.numpy(), weight.numpy(), bias.numpy(), (1, 1), "sphere", 0.7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = spherical_conv(x.bfloat16(), weight.float(), bias.float(), kernel_rad=0.7)
    assert got.dtype == torch.bfloat16 and rel_err(got, expected) < 3e-2


def test_geometry_larger_than_memory_is_refused_with_its_size(monkeypatch):
    x, weight = torch.randn(1, 2, 8, 16), torch.randn(3, 2, 2, 4)
    monkeypatch.setattr(sconv_impl, "choose_path", lambda *args: "gather")
    # Independent count of what the CPU gather path holds: an int64 index and the float32 input under every
    # (output row's padded tap, output column). At r = pi every crown holds all 128 input pixels, and the pixel
    # itself and its antipode (undefined beta) are taken kw = 4 times each: 134 taps in every row, no padding.
    need = 8 * (128 + 2 * 3) * 16 * (8 + 2 * 4)
    monkeypatch.setattr(conv_plans, "_physical_memory", lambda: need - 1)
    with pytest.raises(ValueError, match=r"8x16 input with 2 channel\(s\), batch 1.*kernel_rad=3.14159 needs about "
                                         r"0.0 GiB .* more than this machine's"):  # fmt: skip
        spherical_conv(x, weight, kernel_rad=math.pi)
    monkeypatch.setattr(conv_plans, "_physical_memory", lambda: need)
    assert spherical_conv(x, weight, kernel_rad=math.pi).shape == (1, 3, 8, 16)


def test_empty_crown_message_gives_a_radius_that_works():
    x, weight = torch.randn(1, 1, 8, 16), torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match="kernel_rad >= ") as info:
        spherical_conv(x, weight, stride=2, kernel_rad=0.01)
    needed = float(str(info.value).rsplit(">= ", 1)[1])
    assert torch.isfinite(spherical_conv(x, weight, stride=2, kernel_rad=needed)).all()


def test_original_import_lines():
    from sconv.functional import spherical_conv as functional_conv
    from sconv.functional import spherical_pad
    from sconv.module import SphereMSE, SphericalConv, SphericalPad, SphericalPooling

    x = torch.randn(1, 2, 8, 16)
    layer = SphericalConv(2, 4, math.pi / 8, kernel_size=(3, 8), kernel_sr=None)
    y = SphericalPooling()(layer(SphericalPad((1, 1, 1, 1))(x)[..., 1:-1, 1:-1]))
    assert functional_conv is spherical_conv and y.shape == (1, 4, 4, 8)
    assert spherical_pad(x, (1, 1, 1, 1)).shape == (1, 2, 10, 18)
    assert SphereMSE(4, 8)(y, torch.zeros_like(y)).item() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float32_matches_float64_reference(path):
    gen = torch.Generator().manual_seed(11)
    for h, w, stride, r, ksize, mode in [(8, 16, (1, 1), 0.5, (3, 8), "sphere"), (12, 20, (2, 4), 1.3, (4, 3), "zeros"),
                                         (8, 16, (1, 1), math.pi, (8, 16), "sphere")]:
        x = torch.randn(3, 4, h, w, generator=gen, dtype=torch.float64)
        weight = torch.randn(5, 4, *ksize, generator=gen, dtype=torch.float64)
        bias = torch.randn(5, generator=gen, dtype=torch.float64)
        expected = spherical_conv(x, weight, bias, stride=stride, padding_mode=mode, kernel_rad=r)
        xc, wc = x.float().cuda().requires_grad_(), weight.float().cuda().requires_grad_()
        got = spherical_conv(xc, wc, bias.float().cuda(), stride=stride, padding_mode=mode, kernel_rad=r)
        assert rel_err(got, expected.numpy()) < 1e-4
        got.square().sum().backward()
        xd, wd = x.clone().requires_grad_(), weight.clone().requires_grad_()
        spherical_conv(xd, wd, bias, stride=stride, padding_mode=mode, kernel_rad=r).square().sum().backward()
        assert rel_err(xc.grad, xd.grad.numpy()) < 1e-4 and rel_err(wc.grad, wd.grad.numpy()) < 1e-4
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = spherical_conv(xc, wc, stride=stride, padding_mode=mode, kernel_rad=r)
        assert low.dtype == torch.bfloat16 and rel_err(low, (expected - bias[:, None, None]).numpy()) < 3e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_module_compile_and_batch_sizes():
    layer = SphericalConv(3, 4, kernel_rad=0.6, kernel_size=(3, 6), stride=2, bias=True).cuda()
    compiled = torch.compile(layer, dynamic=False)  # one static graph per batch size, batch 0 included
    for batch in (0, 1, 2):
        x = torch.randn(batch, 3, 16, 32, device="cuda")
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-4, atol=1e-5)

"""Issue 22's operators and instrument: the SphereNet-style convolution against a direct float64 evaluation, the kernel
bases (what the equator resolves, against the reference crown convolution), the U-Net's conv types, the planar twin's
longitude padding, and the latitude benchmark (it runs; its per-band scoring against a hand computation)."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import latitude_generalisation as bench
from benchmarks import latitude_mechanism as mechanism
from models.baseline_unet import LongitudeCircularConv2d, SphericalUNet
from sconv.functional.crown import equator_kernel_basis, smooth_kernel_basis
from sconv.functional.sphereconv import longitude_prefilter, sphere_conv
from sconv.module.sconv import SphericalConv
from sconv.module.sphereconv import SphereConv
from tests import reference


def sphere_conv_reference(x, weight, stride, turn=0.0):
    """Direct evaluation: each tap's point is the tangent-plane point ``(x, y)`` at p (turned by ``turn`` radians from
    east toward north), normalised onto the sphere (``c + x e + y n`` with p's unit vector and its east and north
    vectors), sampled bilinearly by hand."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    half = k // 2
    theta, phi = reference.grid(h, w)
    out = np.zeros((n, weight.shape[0], h // stride, w // stride))
    for i in range(h // stride):
        for j in range(w // stride):
            t, f = theta[stride * i + (stride - 1) // 2], phi[stride * j + (stride - 1) // 2]
            centre = reference.unit(t, f)
            east = np.array([-math.sin(f), math.cos(f), 0.0])
            north = np.cross(centre, east)
            taps = np.zeros((n, c, k, k))
            for b in range(k):
                for a in range(k):
                    da, db = a - half, half - b  # tap row 0 is the northernmost
                    tx = math.tan(da * 2 * math.pi / w)
                    ty = math.tan(db * math.pi / h) / math.cos(da * 2 * math.pi / w)
                    tx, ty = tx * math.cos(turn) - ty * math.sin(turn), tx * math.sin(turn) + ty * math.cos(turn)
                    d = centre + tx * east + ty * north
                    d /= np.linalg.norm(d)
                    row = math.acos(np.clip(d[2], -1, 1)) * h / math.pi - 0.5
                    col = (math.atan2(d[1], d[0]) % (2 * math.pi)) * w / (2 * math.pi) - 0.5
                    row = min(max(row, 0.0), h - 1.0)
                    r0 = min(int(math.floor(row)), h - 2)
                    c0 = int(math.floor(col))
                    fr, fc = row - r0, col - c0
                    for dr, wr in ((0, 1 - fr), (1, fr)):
                        for dc, wc in ((0, 1 - fc), (1, fc)):
                            taps[:, :, b, a] += wr * wc * x[:, :, r0 + dr, (c0 + dc) % w]
            out[:, :, i, j] = np.einsum("ncba,ocba->no", taps, weight)
    return out


# (C_in, C_out): sampled first, then mixed; and (fewer out than in, per output pixel) mixed first, then sampled.
CHANNELS = [(3, 4), (9, 2)]


def random_layer(channels, size, seed, requires_grad=False):
    """float64 input ``[2, C_in, *size]``, 3x3 weight and bias of a ``channels = (C_in, C_out)`` layer."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(2, channels[0], *size), (channels[1], channels[0], 3, 3), (channels[1],)]
    return [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=requires_grad) for s in shapes]


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("stride", [1, 2])
def test_sphere_conv_matches_direct_evaluation(stride, channels):
    x, weight, bias = random_layer(channels, (8, 16), 0)
    expected = torch.from_numpy(sphere_conv_reference(x.numpy(), weight.numpy(), stride))
    torch.testing.assert_close(sphere_conv(x, weight, None, stride), expected, rtol=1e-9, atol=1e-9)
    with_bias = sphere_conv(x, weight, bias, stride)
    torch.testing.assert_close(with_bias, expected + bias[:, None, None], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("channels", CHANNELS)
def test_sphere_conv_gradcheck(channels):
    """Input, weight and bias gradients of both orders (sample then mix; mix then sample), per-sample turns."""
    x, weight, bias = random_layer(channels, (4, 8), 1, requires_grad=True)
    turns = torch.tensor([0.2, -0.9], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *args: sphere_conv(*args, turn=turns), (x, weight, bias))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("stride", [1, 2])
def test_sphere_conv_on_cuda_matches_float64(stride, channels, monkeypatch):
    """Both orders on CUDA against the CPU float64 result (itself checked against the direct evaluation above):
    float32 with TF32 off, values and gradients; under bf16 autocast, a bf16 output at bf16's precision."""
    x, weight, bias = random_layer(channels, (8, 16), 2, requires_grad=True)
    turns = torch.tensor([0.3, -0.7], dtype=torch.float64)
    expected = sphere_conv(x, weight, bias, stride, turn=turns)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected_grads = torch.autograd.grad(expected, (x, weight, bias), grad)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    leaves = [t.detach().float().cuda().requires_grad_() for t in (x, weight, bias)]
    got = sphere_conv(*leaves, stride, turn=turns)
    got_grads = torch.autograd.grad(got, leaves, grad.float().cuda())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.cpu().double(), expected.detach(), rtol=1e-4, atol=1e-4)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad.cpu().double(), expected_grad, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", torch.bfloat16):
        low = sphere_conv(*leaves, stride, turn=turns)
    assert low.dtype == torch.bfloat16
    scale = expected.detach().std().item()
    torch.testing.assert_close(low.cpu().double(), expected.detach(), rtol=3e-2, atol=3e-2 * scale)


def longitude_prefilter_reference(x):
    """Direct evaluation: each pixel ``j`` of row ``i`` is the mean, over ``[j - w/2, j + w/2]`` with ``w = min(W,
    1 / sin(theta_i))`` pixels, of the row drawn as constant over each pixel's ``[k - 1/2, k + 1/2]`` (circularly),
    summed pixel by pixel from the overlaps."""
    _, _, h, w = x.shape
    theta, _ = reference.grid(h, w)
    out = np.zeros_like(x)
    for i in range(h):
        width = min(float(w), 1 / math.sin(theta[i]))
        for j in range(w):
            low, high = j - width / 2, j + width / 2
            for k in range(math.floor(low) - 1, math.ceil(high) + 2):
                overlap = min(high, k + 0.5) - max(low, k - 0.5)
                if overlap > 0:
                    out[:, :, i, j] += overlap * x[:, :, i, k % w]
            out[:, :, i, j] /= width
    return out


@pytest.mark.parametrize("size", [(8, 16), (16, 24), (16, 8)])  # (16, 8): the pole rows reach the W cap
def test_longitude_prefilter_matches_direct_evaluation(size):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64) + 5  # an offset, as real inputs have
    expected = torch.from_numpy(longitude_prefilter_reference(x.numpy()))
    torch.testing.assert_close(longitude_prefilter(x), expected, rtol=1e-10, atol=1e-10)
    # float32 (the training dtype) through the running sum: close to the float64 result
    torch.testing.assert_close(longitude_prefilter(x.float()), expected.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_sphere_conv_antialias_is_the_sampling_of_the_prefiltered_input(stride):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, 16, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    prefiltered = longitude_prefilter_reference(x.numpy())
    expected = torch.from_numpy(sphere_conv_reference(prefiltered, weight.numpy(), stride))
    out = sphere_conv(x, weight, None, stride, antialias=True)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    # the default is unchanged, and differs from the antialiased op on this input
    plain = torch.from_numpy(sphere_conv_reference(x.numpy(), weight.numpy(), stride))
    torch.testing.assert_close(sphere_conv(x, weight, None, stride), plain, rtol=1e-9, atol=1e-9)
    assert (out - plain).abs().max() > 0.1
    layer = SphereConv(3, 4, stride=stride, antialias=True).double()
    layer.weight.data.copy_(weight)
    torch.testing.assert_close(layer(x), expected, rtol=1e-9, atol=1e-9)
    assert "antialias=True" in repr(layer)
    with pytest.raises(ValueError, match="antialias applies to conv_type='sphereconv' only"):
        SphericalUNet((16, 32), antialias=True)


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("stride", [1, 2])
def test_sphere_conv_turned_taps_match_direct_evaluation(stride, channels):
    """``turn`` against the direct evaluation with the tangent-plane taps turned: one turn for the batch, one per
    sample; a half turn reads the kernel flipped both ways."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, channels[0], 8, 16, generator=g, dtype=torch.float64)
    weight = torch.randn(channels[1], channels[0], 3, 3, generator=g, dtype=torch.float64)
    for turns in ([0.7, 0.7], [0.3, -1.1]):
        expected = torch.cat(
            [torch.from_numpy(sphere_conv_reference(x[i : i + 1].numpy(), weight.numpy(), stride, t)) for i, t in
             enumerate(turns)]
        )  # fmt: skip
        given = turns[0] if turns[0] == turns[1] else torch.tensor(turns, dtype=torch.float64)
        torch.testing.assert_close(sphere_conv(x, weight, None, stride, turn=given), expected, rtol=1e-9, atol=1e-9)
    half_turn = sphere_conv(x, weight, None, stride, turn=math.pi)
    torch.testing.assert_close(half_turn, sphere_conv(x, weight.flip(2, 3), None, stride), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="turn must be one finite number or 2 finite numbers"):
        sphere_conv(x, weight, turn=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="turn must be one finite number"):
        sphere_conv(x, weight, turn=float("nan"))
    with pytest.raises(TypeError, match="turn must be a number of radians"):
        sphere_conv(x, weight, turn="north")


def test_sphere_conv_frame_jitter_turns_each_sample_while_training():
    """``frame_jitter``: in training mode each sample's taps are turned by one of the ``FRAME_JITTER_STEPS`` angles in
    ``[-j, j]``, drawn from the global generator; in eval mode not at all."""
    from sconv.module.sphereconv import FRAME_JITTER_STEPS

    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, 3, 8, 16, generator=g, dtype=torch.float64)
    layer = SphereConv(3, 4, frame_jitter=0.6).double()
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    turns = layer.turns(len(x))
    allowed = torch.linspace(-0.6, 0.6, FRAME_JITTER_STEPS, dtype=torch.float64)
    assert all(bool((allowed - t).abs().min() < 1e-12) for t in turns) and len(set(turns.tolist())) > 1
    expected = torch.cat(
        [torch.from_numpy(sphere_conv_reference(x[i : i + 1].numpy(), layer.weight.detach().numpy(), 1, float(t)))
         for i, t in enumerate(turns)]
    )  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    layer.eval()
    plain = torch.from_numpy(sphere_conv_reference(x.numpy(), layer.weight.detach().numpy(), 1))
    torch.testing.assert_close(layer(x), plain, rtol=1e-9, atol=1e-9)
    assert "frame_jitter=0.6" in repr(layer)
    with pytest.raises(ValueError, match=r"frame_jitter must be in \[0, pi/2\]"):
        SphereConv(3, 4, frame_jitter=2.0)
    with pytest.raises(TypeError, match="frame_jitter must be a number"):
        SphereConv(3, 4, frame_jitter="40deg")
    with pytest.raises(ValueError, match="frame_jitter applies to conv_type='sphereconv' only"):
        SphericalUNet((16, 32), frame_jitter=0.5)


def test_sphere_conv_symmetric_kernel():
    """``symmetric=True`` applies the kernel averaged by hand over the square's 8 symmetries: for 3 x 3, the centre, the
    mean of the 4 edge values and the mean of the 4 corner values; the gradient reaches every weight."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 16, generator=g, dtype=torch.float64)
    layer = SphereConv(3, 4, symmetric=True).double()
    w = layer.weight.detach()
    edge = (w[..., 0, 1] + w[..., 1, 0] + w[..., 1, 2] + w[..., 2, 1]) / 4
    corner = (w[..., 0, 0] + w[..., 0, 2] + w[..., 2, 0] + w[..., 2, 2]) / 4
    outer, middle = torch.stack([corner, edge, corner], -1), torch.stack([edge, w[..., 1, 1], edge], -1)
    kernel = torch.stack([outer, middle, outer], -2)
    expected = torch.from_numpy(sphere_conv_reference(x.numpy(), kernel.numpy(), 1))
    out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    out.pow(2).sum().backward()
    assert bool((layer.weight.grad != 0).all()) and "symmetric=True" in repr(layer)
    five = SphereConv(2, 3, kernel_size=5, symmetric=True).kernel()  # 5 x 5: the turns alone are not enough
    for image in (five.flip(-1), five.transpose(-1, -2), torch.rot90(five, 1, (2, 3))):
        torch.testing.assert_close(image, five)
    with pytest.raises(ValueError, match="symmetric applies to conv_type='sphereconv' only"):
        SphericalUNet((16, 32), conv_type="standard", symmetric=True)


def test_sphere_conv_module_and_bad_input():
    layer = SphereConv(3, 5, bias=True)
    assert layer(torch.randn(2, 3, 8, 16)).shape == (2, 5, 8, 16)
    assert "kernel_size=3" in repr(layer)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SphereConv(3, 5, kernel_size=4)
    with pytest.raises(ValueError, match="weight must have shape"):
        sphere_conv(torch.randn(1, 2, 8, 16), torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        sphere_conv(torch.randn(1, 3, 8, 16), torch.randn(4, 3, 3, 3), stride=3)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        sphere_conv(torch.randn(1, 3, 8, 16), [[1.0]])
    with pytest.raises(TypeError, match="weight has dtype torch.float32 but input has torch.float64"):
        sphere_conv(torch.randn(1, 3, 8, 16, dtype=torch.float64), torch.randn(4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"bias must have shape \[O\]=\[4\]"):
        sphere_conv(torch.randn(1, 3, 8, 16), torch.randn(4, 3, 3, 3), torch.randn(5))


def test_resolved_basis_is_what_the_equator_sees():
    """A kernel change orthogonal to ``equator_kernel_basis`` leaves the reference crown convolution unchanged on the
    row it was computed for, yet changes it toward the poles (here the paper's first layer at 16 x 32)."""
    h, w, r, size = 16, 32, math.pi / 16, (4, 8)
    basis = equator_kernel_basis(h, w, r, size)
    torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64))
    assert basis.shape[1] < size[0] * size[1]  # the grid does not resolve every node here
    g = torch.Generator().manual_seed(1)
    inside = (basis @ torch.randn(basis.shape[1], 1, generator=g, dtype=torch.float64)).T.reshape(1, 1, *size)
    invisible = torch.randn(size[0] * size[1], generator=g, dtype=torch.float64)
    invisible = (invisible - basis @ (basis.T @ invisible)).reshape(1, 1, *size)
    x = torch.randn(1, 1, h, w, generator=g, dtype=torch.float64).numpy()
    y_in = reference.spherical_conv(x, inside.numpy(), r=r)
    y_both = reference.spherical_conv(x, (inside + invisible).numpy(), r=r)
    row = h // 2 - 1
    np.testing.assert_allclose(y_both[..., row, :], y_in[..., row, :], rtol=0, atol=1e-12)
    assert np.abs(y_both[..., 2, :] - y_in[..., 2, :]).max() > 1e-3


def test_smooth_basis_holds_smooth_kernels():
    basis = smooth_kernel_basis((4, 8))
    torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64))
    alpha = torch.linspace(0, 1, 4, dtype=torch.float64)[:, None]
    beta = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    smooth = (1 + 2 * alpha - alpha**2 + alpha * torch.cos(beta) - 3 * alpha**2 * torch.sin(2 * beta)).reshape(-1)
    torch.testing.assert_close(basis @ (basis.T @ smooth), smooth)
    rough = torch.zeros(32, dtype=torch.float64)
    rough[9] = 1.0  # one node alone is not smooth
    assert float((basis @ (basis.T @ rough) - rough).norm()) > 0.5


@pytest.mark.parametrize("kernel_basis", ["resolved", "smooth"])
def test_spherical_conv_with_basis_is_the_crown_conv_of_its_nodes(kernel_basis):
    layer = SphericalConv(
        2, 3, kernel_rad=math.pi / 8, kernel_size=(3, 6), kernel_basis=kernel_basis, grid_size=(8, 16)
    )
    layer.double()
    x = torch.randn(1, 2, 8, 16, dtype=torch.float64)
    expected = reference.spherical_conv(x.numpy(), layer.node_weight().detach().numpy(), r=math.pi / 8)
    torch.testing.assert_close(layer(x), torch.from_numpy(expected), rtol=1e-9, atol=1e-9)
    assert not hasattr(layer, "weight") and layer.weight_coef.shape == (3, 2, layer.basis.shape[1])
    assert f"kernel_basis={kernel_basis!r}" in repr(layer)


def test_kernel_basis_bad_arguments():
    with pytest.raises(ValueError, match="kernel_basis must be one of"):
        SphericalConv(2, 3, kernel_size=(3, 6), kernel_basis="bogus")
    with pytest.raises(ValueError, match="needs grid_size"):
        SphericalConv(2, 3, kernel_size=(3, 6), kernel_basis="resolved")
    with pytest.raises(ValueError, match="conv_type must be one of"):
        SphericalUNet((16, 32), conv_type="sphere")
    with pytest.raises(ValueError, match="planar_padding must be one of"):
        SphericalUNet((16, 32), planar_padding="reflect")


def test_circular_planar_twin_is_longitude_equivariant():
    layer = LongitudeCircularConv2d(2, 3, 5).double()
    x = torch.randn(1, 2, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(torch.roll(x, 5, -1)), torch.roll(layer(x), 5, -1))
    zeros = torch.nn.Conv2d(2, 3, 5, padding=2).double()
    zeros.weight, zeros.bias = layer.weight, layer.bias
    torch.testing.assert_close(layer(x)[..., 2:-2], zeros(x)[..., 2:-2])  # the same away from the seam


@pytest.mark.parametrize(
    "options, conv",
    [
        (dict(conv_type="sphereconv"), SphereConv),
        (dict(conv_type="sphereconv", antialias=True), SphereConv),
        (dict(conv_type="sphereconv", symmetric=True), SphereConv),
        (dict(conv_type="sphereconv", frame_jitter=0.5), SphereConv),
        (dict(conv_type="standard", planar_padding="circular"), LongitudeCircularConv2d),
        (dict(kernel_size=(3, 6), kernel_basis="smooth"), SphericalConv),
    ],
)
def test_unet_options(options, conv):
    model = SphericalUNet((16, 32), **options)
    assert all(isinstance(getattr(model, f"conv{i}"), conv) for i in range(1, 8))
    out = model(torch.randn(2, 3, 16, 32), torch.zeros(2, 1, 16, 32))
    assert out.shape == (2, 1, 16, 32) and bool(torch.isfinite(out).all())


def test_band_scores_by_hand():
    """Per-band means of the sphere-weighted CC against a direct float64 computation."""
    g = torch.Generator().manual_seed(3)
    target = torch.rand(6, 8, 16, generator=g, dtype=torch.float64)
    pred = torch.stack([target[0], 1 - target[1], target[2] + torch.rand(8, 16, generator=g, dtype=torch.float64)])
    pred = torch.cat([pred, torch.rand(3, 8, 16, generator=g, dtype=torch.float64)])
    band = torch.tensor([0, 1, 2, 2, 0, 1])
    means, per_scene = bench.band_scores(pred, target, band, 4)

    def weighted_cc(p, t):
        theta = (np.arange(8) + 0.5) * math.pi / 8
        area = np.repeat((np.cos(theta - math.pi / 16) - np.cos(theta + math.pi / 16))[:, None], 16, 1)
        p, t = p.numpy(), t.numpy()
        pc, tc = p - (area * p).sum() / area.sum(), t - (area * t).sum() / area.sum()
        return (area * pc * tc).sum() / math.sqrt((area * pc * pc).sum() * (area * tc * tc).sum())

    expected = [weighted_cc(pred[i], target[i]) for i in range(6)]
    torch.testing.assert_close(per_scene, torch.tensor(expected, dtype=torch.float64))
    assert means[0] == pytest.approx((1.0 + expected[4]) / 2) and means[1] == pytest.approx((-1.0 + expected[5]) / 2)
    assert means[2] == pytest.approx((expected[2] + expected[3]) / 2)
    assert math.isnan(means[3])  # no scene in that band


def test_benchmark_runs(tmp_path, monkeypatch, capsys):
    bench.main(
        ["--out", str(tmp_path), "--sizes", "16x32", "--models", "sphereconv", "planar", "--seeds", "2", "--steps", "1"]
        + ["--batch", "2", "--n-test", "1", "--device", "cpu"]
    )
    result = json.loads((tmp_path / "latitude.json").read_text())
    assert len(result["runs"]) == 4
    summary = result["summary"]["16x32"]
    assert set(summary) == {"sphereconv", "planar"}
    assert summary["planar"]["parameters"] == sum(
        p.numel() for p in SphericalUNet((16, 32), **bench.MODELS["planar"]).parameters()
    )
    assert all(len(m["cc_mean"]) == len(bench.TEST_BANDS) == len(m["cc_std"]) for m in summary.values())
    assert (tmp_path / "latitude.png").stat().st_size > 0

    # The rest of a cut run: seed 2 alone, then merged with the first run; the summary is over all three seeds.
    rest, merged = tmp_path / "rest", tmp_path / "merged"
    bench.main(
        ["--out", str(rest), "--sizes", "16x32", "--models", "planar", "--seed-list", "2", "--steps", "1"]
        + ["--batch", "2", "--n-test", "1", "--device", "cpu"]
    )
    files = [str(tmp_path / "latitude.json"), str(rest / "latitude.json")]
    bench.main(["--out", str(merged), "--merge", *files])
    joined = json.loads((merged / "latitude.json").read_text())
    planar = joined["summary"]["16x32"]["planar"]
    assert planar["seeds"] == [0, 1, 2]
    ccs = torch.tensor([r["cc"] for r in joined["runs"] if r["model"] == "planar"], dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(planar["cc_mean"], dtype=torch.float64), ccs.mean(0))
    with pytest.raises(SystemExit):  # the same run twice
        bench.main(["--out", str(merged), "--merge", files[0], files[0]])
    # a folder, a file that is not there, a file that is not JSON
    for unreadable in (str(rest), str(rest / "nothing.json"), str(tmp_path / "latitude.png")):
        with pytest.raises(SystemExit):
            bench.main(["--out", str(tmp_path / "refused"), "--merge", files[0], unreadable])
        assert "cannot read" in capsys.readouterr().err
    # a merged file keeps its settings, so a later seed of the same setting joins it
    later, remerged = tmp_path / "later", tmp_path / "remerged"
    bench.main(
        ["--out", str(later), "--sizes", "16x32", "--models", "planar", "--seed-list", "3", "--steps", "1"]
        + ["--batch", "2", "--n-test", "1", "--device", "cpu"]
    )
    bench.main(["--out", str(remerged), "--merge", str(merged / "latitude.json"), str(later / "latitude.json")])
    assert json.loads((remerged / "latitude.json").read_text())["summary"]["16x32"]["planar"]["seeds"] == [0, 1, 2, 3]
    bench.main(["--out", str(tmp_path / "other"), "--sizes", "16x32", "--models", "planar", "--seed-list", "3"]
               + ["--steps", "2", "--batch", "2", "--n-test", "1", "--device", "cpu"])  # fmt: skip
    other = str(tmp_path / "other" / "latitude.json")
    for first in (files[0], str(merged / "latitude.json")):  # another setting (steps) for the same size
        with pytest.raises(SystemExit):
            bench.main(["--out", str(tmp_path / "refused"), "--merge", first, other])
    # an oracle run (trained in another latitude band) is recorded as such and never merged with the others
    oracle, draw, bands = tmp_path / "oracle", bench.scene_parameters, []
    monkeypatch.setattr(bench, "scene_parameters", lambda n, band, g: bands.append(band) or draw(n, band, g))
    bench.main(["--out", str(oracle), "--sizes", "24x48", "--models", "planar", "--steps", "2", "--seeds", "1"]
               + ["--batch", "2", "--n-test", "1", "--device", "cpu", "--train-band", "0", "70"])  # fmt: skip
    assert bands.count((0.0, 70.0)) == 2  # the two training batches; the test scenes are drawn per test band
    assert json.loads((oracle / "latitude.json").read_text())["train_band_deg"] == [0.0, 70.0]
    assert joined["train_band_deg"] == list(bench.TRAIN_BAND)
    with pytest.raises(SystemExit):
        bench.main(["--out", str(merged), "--merge", files[0], str(oracle / "latitude.json")])
    with pytest.raises(SystemExit):
        bench.main(["--out", str(oracle), "--train-band", "30", "20"])


def test_scene_targets_follow_the_object():
    """A square drawn at latitude 60 is, along its centre's row, wider on the panorama than at the equator by about
    1 / cos(60) (= 2); the target is the salient object's mask only."""
    bitmaps = bench.shape_bitmaps()
    widths = []
    for lat in (0.0, 60.0):
        params = bench.scene_parameters(1, (lat, lat), torch.Generator().manual_seed(0))
        params["shape"][:] = torch.tensor([3, 4, 4])  # a square as object 0, L shapes elsewhere
        params["turn"][:] = 0.0
        params["lat"][:] = torch.tensor([lat, -30.0, -30.0]).double() * math.pi / 180
        params["lon"][:] = torch.tensor([1.0, 0.33, 1.67]).double() * math.pi  # object 0 away from the seam
        _, target = bench.render(params, (64, 128), bitmaps, torch.device("cpu"))
        centre_row = round((90 - lat) / 180 * 64 - 0.5)
        widths.append(float(target[0, 0, centre_row].sum()))
        assert float(target[0, 0, 40:].sum()) == 0  # the others (at -30 degrees) are not targets
    assert 1.8 < widths[1] / widths[0] < 2.2


def test_meridian_instrument_sees_the_identity_as_consistent():
    """Read back in its own tangent frame, the pattern itself at 45 degrees correlates with it at the equator: the
    instrument's own resampling loses little at 64 x 128."""
    half_width = math.radians(14)
    base = mechanism.read_back(mechanism.tangent_pattern((64, 128), 0.0, math.pi, half_width), 0.0, math.pi, half_width)
    lat = math.radians(45)
    moved = mechanism.read_back(
        mechanism.tangent_pattern((64, 128), lat, math.pi, half_width), lat, math.pi, half_width
    )
    a, b = base.flatten() - base.mean(), moved.flatten() - moved.mean()
    assert float(a @ b / (a.norm() * b.norm())) > 0.9


def test_prediction_shares_by_hand():
    """Shares of the solid-angle-weighted prediction on the salient object, the distractors and the rest, and whether
    the salient object gets the highest mean, against a pixel-by-pixel sum with each row's area from its edges."""
    h, w = 4, 8
    masks = torch.zeros(3, 3, h, w, dtype=torch.float64)
    masks[:, 0, 0, 0:2] = 1  # salient object: polar row
    masks[:, 1, 1, 2:5] = 1
    masks[:, 2, 2, 5:8] = 1
    masks[:, 2, 2, 4] = 0.5  # a partly covered pixel
    masks[:, 1, 0, 1] = 1  # a distractor under the salient object there: counted as salient only
    pred = torch.zeros(3, h, w, dtype=torch.float64)
    pred[0] = masks[0, 0]  # all on the salient object
    pred[1] = 0.5  # uniform: the salient object is not strictly first
    pred[2] = 0.2
    pred[2, 1, 2:5] = 1.0  # a distractor lit
    bands = torch.tensor([0, 1, 1])
    shares = bench.prediction_shares(pred, masks, bands, 2)

    row_area = [(math.cos(i * math.pi / h) - math.cos((i + 1) * math.pi / h)) * 2 * math.pi / w for i in range(h)]
    expected = {"salient": [], "distractors": [], "rest": [], "first": []}
    for n in range(3):
        total = on_s = on_d = 0.0
        inside = [[0.0, 0.0] for _ in range(3)]
        for i in range(h):
            for j in range(w):
                p, a = float(pred[n, i, j]), row_area[i]
                s_cov = float(masks[n, 0, i, j])
                d_cov = min(1.0, float(masks[n, 1, i, j] + masks[n, 2, i, j])) * (1 - s_cov)
                total += p * a
                on_s += p * a * s_cov
                on_d += p * a * d_cov
                for o in range(3):
                    inside[o][0] += p * a * float(masks[n, o, i, j])
                    inside[o][1] += a * float(masks[n, o, i, j])
        means = [num / den for num, den in inside]
        expected["salient"].append(on_s / total)
        expected["distractors"].append(on_d / total)
        expected["rest"].append(1 - (on_s + on_d) / total)
        expected["first"].append(float(means[0] > means[1] and means[0] > means[2]))
    for key, name in (
        ("salient", "salient"),
        ("distractors", "distractors"),
        ("rest", "rest"),
        ("first", "salient_first"),
    ):
        by_band = [expected[key][0], (expected[key][1] + expected[key][2]) / 2]
        torch.testing.assert_close(
            torch.tensor(shares[name], dtype=torch.float64), torch.tensor(by_band, dtype=torch.float64)
        )
    assert shares["salient"][0] == pytest.approx(1.0) and shares["salient_first"] == [1.0, 0.0]


def test_stage_meridian_by_hand():
    """Per stage: the mean over the channels that vary at the equator of each channel's correlation (numpy's
    corrcoef on the read-backs); a sign flip changes nothing, a dead channel is left out, a dead stage has no value,
    and a channel that goes flat away from the equator counts as 0."""
    size, half_width, lats = (32, 64), math.radians(14), (0.0, 22.5, 67.5)

    def stages(pattern):
        zero = torch.zeros_like(pattern[:, :1])
        flat_away = pattern[:, :1] if bool(pattern[0, 0, 16].any()) else zero  # only at the equator (row 16)
        return {
            "pattern": pattern,
            "negated": -pattern,
            "one_dead": torch.cat([pattern[:, 1:2], zero], 1),
            "dead": zero,
            "flat_away": torch.cat([flat_away, pattern[:, 2:]], 1),
        }

    measured = mechanism.stage_meridian(stages, size, latitudes=lats)
    backs = {
        lat: mechanism.read_back(
            mechanism.tangent_pattern(size, math.radians(lat), math.pi, half_width),
            math.radians(lat),
            math.pi,
            half_width,
        )[0]
        .flatten(1)
        .numpy()
        for lat in lats
    }
    for lat in lats:
        per_channel = [np.corrcoef(backs[0.0][c], backs[lat][c])[0, 1] for c in range(3)]
        key = str(lat)
        assert measured["pattern"][key] == pytest.approx(np.mean(per_channel), abs=1e-5)
        assert measured["negated"][key] == pytest.approx(np.mean(per_channel), abs=1e-5)
        assert measured["one_dead"][key] == pytest.approx(per_channel[1], abs=1e-5)
        assert measured["dead"][key] is None
        expected_flat = per_channel[0] if lat == 0.0 else 0.0
        assert measured["flat_away"][key] == pytest.approx((expected_flat + per_channel[2]) / 2, abs=1e-5)
    assert [measured[n]["live"] for n in stages(torch.zeros(1, 3, *size))] == [3, 3, 1, 0, 2]
    assert measured["pattern"]["67.5"] < 0.999  # the instrument's resampling is not exact at 32 x 64


def test_unet_stages_are_the_network_own_activations():
    """The hooks capture each convolution before and after its BatchNorm + ReLU; the last stage is the logits."""
    torch.manual_seed(0)
    model = SphericalUNet((16, 32), conv_type="sphereconv").eval()
    pattern = torch.rand(1, 3, 16, 32)
    stages = mechanism.unet_stages(model, pattern)
    assert tuple(stages) == mechanism.UNET_STAGES  # forward order: conv1, relu1, conv2, ..., relu6, conv7
    with torch.no_grad():
        conv1 = model.conv1(torch.cat([pattern, torch.zeros_like(pattern[:, :1])], 1))
        torch.testing.assert_close(stages["conv1"], conv1)
        torch.testing.assert_close(stages["relu1"], torch.relu(model.bn1(conv1)))
        torch.testing.assert_close(stages["conv7"], model(pattern, torch.zeros_like(pattern[:, :1])))
    assert stages["relu4"].shape[-2:] == (2, 4)  # the bottleneck
    assert not model._forward_hooks and not model.conv1._forward_hooks  # hooks removed


def test_saved_network_scores_the_same_and_its_first_layer_is_measured(tmp_path):
    """``--save-models`` writes the trained network: loaded again (weights only) it scores the run's CC on the same
    test set; the trained-layer meridian reads its first layer with the previous-map channel at zero."""
    bench.main(
        ["--out", str(tmp_path), "--sizes", "16x32", "--models", "sphereconv", "--seeds", "1", "--steps", "2"]
        + ["--batch", "2", "--n-test", "2", "--device", "cpu", "--save-models", "--rotated-views", "--views", "50", "4"]
    )
    run = json.loads((tmp_path / "latitude.json").read_text())["runs"][0]
    path = tmp_path / "models" / "16x32_sphereconv_seed0.pt"
    model, saved = bench.load_trained(str(path))
    assert (saved["model"], saved["size"], saved["seed"], saved["steps"]) == ("sphereconv", [16, 32], 0, 2)
    test = bench.test_set((16, 32), 2, bench.shape_bitmaps(), torch.device("cpu"))
    scores = bench.evaluate(model, *test, _no_autocast)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(run["cc"]), equal_nan=False)
    bench.main(
        ["--out", str(tmp_path), "--rescore", str(path), "--n-test", "2", "--device", "cpu", "--views", "50", "4"]
    )
    rescored = json.loads((tmp_path / "rescore.json").read_text())["runs"][0]
    torch.testing.assert_close(torch.tensor(rescored["cc"]), torch.tensor(run["cc"]))
    torch.testing.assert_close(torch.tensor(rescored["cc_rotated_views"]), torch.tensor(run["cc_rotated_views"]))
    parts = [torch.tensor(rescored["shares"][key], dtype=torch.float64) for key in ("salient", "distractors", "rest")]
    torch.testing.assert_close(parts[0] + parts[1] + parts[2], torch.ones(3, dtype=torch.float64))
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path), "--rescore", str(path), "--views", "50", "2.5"])

    mechanism.main(["--out", str(tmp_path / "mech"), "--trained", str(path), "--stages"])
    written = json.loads((tmp_path / "mech" / "mechanism.json").read_text())
    stages = written["stages"]["16x32"]["sphereconv seed 0"]
    expected_stages = mechanism.stage_meridian(lambda p: mechanism.unet_stages(model, p), (16, 32))
    assert set(stages) == set(expected_stages) == set(mechanism.UNET_STAGES)
    for name, values in expected_stages.items():
        for lat, value in values.items():
            assert stages[name][lat] == (None if value is None else pytest.approx(value, abs=1e-6)), (name, lat)
    with pytest.raises(SystemExit):
        mechanism.main(["--out", str(tmp_path / "mech"), "--stages"])
    measured = written["meridian"]["16x32"]["sphereconv seed 0"]
    three = SphereConv(3, model.conv1.out_channels, 3)  # the same layer without the previous-map channel
    with torch.no_grad():
        three.weight.copy_(model.conv1.weight[:, :3])
    expected = mechanism.meridian((16, 32), inits=1, factories={"three": lambda: three})["three"]
    assert set(measured) == set(expected)
    for lat in expected:
        assert measured[lat] == pytest.approx(expected[lat], abs=1e-6)
        assert -1.0 <= measured[lat] <= 1.0


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def test_rotated_views_bring_each_centre_upright_to_the_middle():
    views = bench.rotated_views(centre_lat=50.0, n_lon=6)
    assert views.shape == (13, 3, 3)
    torch.testing.assert_close(views[0], torch.eye(3, dtype=torch.float64))
    for k, view in enumerate(views[1:]):
        torch.testing.assert_close(view @ view.T, torch.eye(3, dtype=torch.float64))
        assert float(torch.linalg.det(view)) == pytest.approx(1.0)
        lat, lon = math.radians(50.0 if k < 6 else -50.0), 2 * math.pi * (k % 6) / 6
        centre = torch.tensor([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]).double()
        north = torch.tensor([-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)]).double()
        torch.testing.assert_close(view @ centre, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        torch.testing.assert_close(view @ north, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    # A pixel near a view's centre is scored by that view; a pixel near the equator by the identity.
    choice = bench.view_choice(32, 64, views, "cpu")
    lat_row = lambda lat: round((90 - lat) / 180 * 32 - 0.5)  # noqa: E731
    lon_col = lambda lon: round(lon / 360 * 64 - 0.5) % 64  # noqa: E731
    assert int(choice[lat_row(0.0), lon_col(100.0)]) == 0
    assert int(choice[lat_row(50.0), lon_col(120.0)]) == 3  # north, third longitude
    assert int(choice[lat_row(-50.0), lon_col(240.0)]) == 11  # south, fifth longitude


def test_rotated_views_of_a_pointwise_model_give_its_plain_prediction():
    """A model that maps each pixel on its own commutes with rotations, so scoring with rotated views must give (up to
    the two bilinear resamplings) its plain prediction; rotating back the wrong way would not."""

    class Pointwise(torch.nn.Module):
        def forward(self, frame, previous):
            return 8 * (frame[:, :1] - 0.5)

    frames = bench.test_set((32, 64), 4, bench.shape_bitmaps(), torch.device("cpu"))[0]
    plain = torch.sigmoid(Pointwise()(frames, None))[:, 0]
    rotated = bench.predict_rotated(Pointwise(), frames, _no_autocast, bench.rotated_views())
    assert float((rotated - plain).abs().mean()) < 0.01  # about 0.13 with the prediction rotated back the wrong way


def test_a_rotated_view_brings_its_centre_upright_to_the_middle_of_the_panorama():
    """An object drawn at a view's centre (latitude 50) lies, in that view, on the equator at longitude 0 of the
    scene frame, as wide as the same object drawn there (upright: its height along the meridian is kept)."""
    views, bitmaps = bench.rotated_views(50.0, 6), bench.shape_bitmaps()
    targets = []
    for lat, lon in ((50.0, 120.0), (0.0, 0.0)):
        params = bench.scene_parameters(1, (lat, lat), torch.Generator().manual_seed(0))
        params["shape"][:] = torch.tensor([3, 4, 4])  # a square as object 0
        params["turn"][:] = 0.0
        params["lat"][:] = torch.tensor([lat, -80.0, -80.0]).double() * math.pi / 180
        params["lon"][:] = torch.tensor([lon, 0.0, 0.0]).double() * math.pi / 180
        targets.append(bench.render(params, (64, 128), bitmaps, torch.device("cpu"))[1])
    moved = bench.rotate_view(targets[0], views[3])  # north, longitude 120
    u = bench.sphere_directions(64, 128, "cpu")
    for target in (moved, targets[1]):
        mass = target[0, 0]
        centre = (u * mass[..., None]).sum((0, 1))
        centre = centre / centre.norm()
        assert float(centre[0]) > 0.999  # at latitude 0, longitude 0 of the scene frame
    torch.testing.assert_close(moved.sum(), targets[1].sum(), rtol=0.05, atol=0)
    rows = lambda t: int((t[0, 0].sum(1) > 0.5).sum())  # noqa: E731
    assert abs(rows(moved) - rows(targets[1])) <= 1

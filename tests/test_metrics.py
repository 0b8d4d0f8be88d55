"""Saliency metrics: planar ones against pysaliency, sphere-weighted ones against direct per-pixel sums.

The direct references below loop over pixels in plain Python floats, with the solid angles written out from the
spec, and share no code with ``sconv.metrics``.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from sconv import metrics
from sconv.metrics import auc_borji, auc_judd, cc, kld, nss, sauc, sim

if not hasattr(np, "trapz"):  # pysaliency's general_roc calls np.trapz, which numpy 2.4 removed
    np.trapz = np.trapezoid


def pysaliency():
    """pysaliency's metrics and ROC modules; the test skips where pysaliency (the `test` extra) is not installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pysaliency imports the deprecated pkg_resources
        reason = "needs pysaliency (installed by the `test` extra)"
        return pytest.importorskip("pysaliency.metrics", reason=reason), pytest.importorskip("pysaliency.roc")

SHAPES = [(6, 10), (9, 16), (3, 5, 8)]


def random_case(shape, seed, ties):
    """pred, gt, fixation counts and other fixation counts; every item has fixations of both kinds."""
    rng = np.random.default_rng(seed)
    pred = rng.random(shape)
    if ties:  # few distinct values: exercises the ROC's handling of equal scores
        pred = np.floor(pred * 4)
    gt = rng.random(shape) ** 3
    fixations = rng.poisson(0.4, shape).astype(np.float64)
    others = rng.poisson(0.6, shape).astype(np.float64)
    fixations.reshape(-1, shape[-2], shape[-1])[:, 0, 0] += 1
    others.reshape(-1, shape[-2], shape[-1])[:, -1, 1] += 2
    return pred, gt, fixations, others


def items(*maps):
    """The [H, W] items of maps that are all [H, W] or all [B, H, W]."""
    if maps[0].ndim == 2:
        return [maps]
    return list(zip(*maps))


def fixation_positions(counts):
    ys, xs = np.nonzero(counts)
    repeats = counts[ys, xs].astype(int)
    return np.repeat(xs, repeats), np.repeat(ys, repeats)


# ---------------------------------------------------------------------------------------------------------------
# Planar metrics against pysaliency


def planar_references(pred, gt, fixations, others):
    ps_metrics, ps_roc = pysaliency()
    refs = {name: [] for name in ("cc", "nss", "kld", "sim", "auc_judd", "sauc")}
    for p, g, f, o in items(pred, gt, fixations, others):
        xs, ys = fixation_positions(f)
        oxs, oys = fixation_positions(o)
        refs["cc"].append(ps_metrics.CC(p, g))
        refs["nss"].append(np.mean(ps_metrics.NSS(p, xs, ys)))
        with np.errstate(divide="ignore"):  # pysaliency takes log(0) on zero pixels, then multiplies it away
            refs["kld"].append(ps_metrics.MIT_KLDiv(p, g))
        refs["sim"].append(ps_metrics.SIM(p, g))
        refs["auc_judd"].append(ps_roc.general_roc(p[ys, xs], p.flatten(), judd=1)[0])
        refs["sauc"].append(ps_roc.general_roc(p[ys, xs], p[oys, oxs], judd=0)[0])
    return refs


def all_metrics(pred, gt, fixations, others, sphere):
    return {
        "cc": cc(pred, gt, sphere=sphere),
        "nss": nss(pred, fixations, sphere=sphere),
        "kld": kld(pred, gt, sphere=sphere),
        "sim": sim(pred, gt, sphere=sphere),
        "auc_judd": auc_judd(pred, fixations, sphere=sphere),
        "sauc": sauc(pred, fixations, others, sphere=sphere),
    }


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_planar_metrics_match_pysaliency(shape, ties):
    pred, gt, fixations, others = random_case(shape, seed=len(shape) * 100 + shape[-1] + ties, ties=ties)
    refs = planar_references(pred, gt, fixations, others)
    for as_torch in (False, True):
        maps = (pred, gt, fixations, others)
        ours = all_metrics(*[torch.from_numpy(a) for a in maps] if as_torch else maps, sphere=False)
        for name, ref in refs.items():
            value = ours[name]
            if len(shape) == 2:
                assert isinstance(value, float), name
            else:
                assert isinstance(value, torch.Tensor if as_torch else np.ndarray), name
                assert value.dtype in (torch.float64, np.float64) and tuple(value.shape) == (shape[0],), name
                value = np.asarray(value)
            np.testing.assert_allclose(value, ref if len(shape) == 3 else ref[0], rtol=1e-6, atol=1e-12, err_msg=name)


def test_planar_metrics_match_pysaliency_on_float32_and_counts_as_int():
    pred, gt, fixations, others = random_case((7, 12), seed=3, ties=False)
    refs = planar_references(pred.astype(np.float32).astype(np.float64), gt.astype(np.float32).astype(np.float64),
                             fixations, others)
    ours = all_metrics(torch.from_numpy(pred).float(), torch.from_numpy(gt).float(),
                       torch.from_numpy(fixations).long(), others.astype(np.int32), sphere=False)
    for name, ref in refs.items():
        assert ours[name] == pytest.approx(ref[0], rel=1e-6, abs=1e-12), name


# ---------------------------------------------------------------------------------------------------------------
# Sphere-weighted metrics against direct sums over pixels


def solid_angles(h, w):
    return [2 * math.pi / w * (math.cos(i * math.pi / h) - math.cos((i + 1) * math.pi / h)) for i in range(h)]


def pixels(m):
    return [(i, j) for i in range(m.shape[0]) for j in range(m.shape[1])]


def weighted_mean(m, area):
    return sum(area[i] * float(m[i, j]) for i, j in pixels(m)) / sum(area[i] for i, _ in pixels(m))


def weighted_std(m, area):
    mean = weighted_mean(m, area)
    return math.sqrt(weighted_mean((m - mean) ** 2, area))


def sphere_distribution(m, area):
    total = sum(area[i] * float(m[i, j]) for i, j in pixels(m))
    return {(i, j): area[i] * float(m[i, j]) / total for i, j in pixels(m)}


def direct_cc(p, g, area):
    mp, mg = weighted_mean(p, area), weighted_mean(g, area)
    cov = sum(area[i] * (p[i, j] - mp) * (g[i, j] - mg) for i, j in pixels(p))
    var_p = sum(area[i] * (p[i, j] - mp) ** 2 for i, j in pixels(p))
    var_g = sum(area[i] * (g[i, j] - mg) ** 2 for i, j in pixels(p))
    return cov / math.sqrt(var_p * var_g)


def direct_nss(p, f, area):
    mean, std = weighted_mean(p, area), weighted_std(p, area)
    total = 0.0
    for i, j in pixels(p):
        for _ in range(int(f[i, j])):  # one term per fixation
            total += (p[i, j] - mean) / std
    return total / f.sum()


def direct_kld(p, g, area):
    eps = 2.2204e-16
    pd, qd = sphere_distribution(p, area), sphere_distribution(g, area)
    return sum(qd[k] * math.log(eps + qd[k] / (pd[k] + eps)) for k in pd)


def direct_sim(p, g, area):
    pd, qd = sphere_distribution(p, area), sphere_distribution(g, area)
    return sum(min(pd[k], qd[k]) for k in pd)


def direct_judd(p, f, area):
    """Trapezoidal ROC area, thresholds at the fixated values, negatives every pixel weighted by area."""
    n_fix = f.sum()
    total_area = sum(area[i] for i, _ in pixels(p))
    points = [(0.0, 0.0)]
    for t in sorted({float(p[i, j]) for i, j in pixels(p) if f[i, j] > 0}, reverse=True):
        hit = sum(f[i, j] for i, j in pixels(p) if p[i, j] >= t) / n_fix
        false_alarm = sum(area[i] for i, j in pixels(p) if p[i, j] >= t) / total_area
        points.append((false_alarm, hit))
    points.append((1.0, 1.0))
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))


def pairwise_auc(positives, negatives):
    """P(positive > negative) + P(positive == negative) / 2 over (value, weight) pairs, by explicit comparison."""
    won = sum(wp * wn * (1.0 if vp > vn else 0.5 if vp == vn else 0.0) for vp, wp in positives for vn, wn in negatives)
    return won / (sum(w for _, w in positives) * sum(w for _, w in negatives))


def fixation_pairs(p, f):
    return [(float(p[i, j]), float(f[i, j])) for i, j in pixels(p) if f[i, j] > 0]


def pixel_pairs(p, area):
    return [(float(p[i, j]), area[i]) for i, j in pixels(p)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(5, 8), (3, 7, 12)])
def test_sphere_metrics_match_direct_sums(shape, ties):
    pred, gt, fixations, others = random_case(shape, seed=7 + shape[-1] + ties, ties=ties)
    area = solid_angles(*shape[-2:])
    ours = all_metrics(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(fixations),
                       torch.from_numpy(others), sphere=True)
    refs = {name: [] for name in ours}
    for p, g, f, o in items(pred, gt, fixations, others):
        refs["cc"].append(direct_cc(p, g, area))
        refs["nss"].append(direct_nss(p, f, area))
        refs["kld"].append(direct_kld(p, g, area))
        refs["sim"].append(direct_sim(p, g, area))
        refs["auc_judd"].append(direct_judd(p, f, area))
        refs["sauc"].append(pairwise_auc(fixation_pairs(p, f), fixation_pairs(p, o)))
    planar = all_metrics(pred, gt, fixations, others, sphere=False)
    for name, ref in refs.items():
        np.testing.assert_allclose(ours[name], ref if len(shape) == 3 else ref[0], rtol=1e-6, atol=1e-12,
                                   err_msg=name)
        if name != "sauc":  # the pixel weights matter for every metric but sAUC, whose negatives are fixations
            assert np.isfinite(planar[name]).all(), name
            assert not np.allclose(planar[name], ours[name], rtol=1e-4, atol=0), name


def test_judd_with_every_pixel_fixated_is_the_pairwise_area():
    # With a threshold at every pixel value the Judd curve is the full ROC: its area is the pairwise probability.
    pred, _, _, _ = random_case((6, 9), seed=11, ties=True)
    fixations = np.random.default_rng(12).integers(1, 4, pred.shape).astype(np.float64)
    area = solid_angles(6, 9)
    assert auc_judd(pred, fixations) == pytest.approx(
        pairwise_auc(fixation_pairs(pred, fixations), pixel_pairs(pred, area)), rel=1e-9
    )


def test_equal_solid_angles_reduce_to_planar(monkeypatch):
    pred, gt, fixations, others = random_case((3, 6, 11), seed=5, ties=True)
    planar = all_metrics(pred, gt, fixations, others, sphere=False)
    planar["borji"] = auc_borji(pred, fixations, splits=20, generator=torch.Generator().manual_seed(0), sphere=False)
    monkeypatch.setattr(
        metrics, "pixel_solid_angle", lambda h, w, device=None: torch.full((h,), 0.37, dtype=torch.float64,
                                                                           device=device)
    )
    equal = all_metrics(pred, gt, fixations, others, sphere=True)
    equal["borji"] = auc_borji(pred, fixations, splits=20, generator=torch.Generator().manual_seed(0), sphere=True)
    for name in planar:
        np.testing.assert_allclose(equal[name], planar[name], rtol=1e-12, atol=1e-14, err_msg=name)


# ---------------------------------------------------------------------------------------------------------------
# AUC-Borji: a sampled estimate of the exact AUC


def borji_expectation(p, f, weights, step):
    """Exact AUC of the fixations against pixels drawn with probability ~ weights, on the map quantised to the
    thresholds 0, step, 2 step, ...: its mean and the standard deviation of one fixation-count-sized draw's area.
    """
    thresholds = [k * step for k in range(math.floor(1 / step + 1e-9) + 1)]
    normalised = (p - p.min()) / (p.max() - p.min())
    level = np.vectorize(lambda v: sum(v >= t for t in thresholds))(normalised)
    positives = fixation_pairs(level, f)
    n_fix = sum(w for _, w in positives)
    credit = {(i, j): pairwise_auc(positives, [(float(level[i, j]), 1.0)]) for i, j in pixels(p)}
    total = sum(weights[i] for i, _ in pixels(p))
    mean = sum(weights[i] * credit[i, j] for i, j in pixels(p)) / total
    variance = sum(weights[i] * (credit[i, j] - mean) ** 2 for i, j in pixels(p)) / total
    return mean, math.sqrt(variance / n_fix)


@pytest.mark.parametrize("sphere", [False, True])
@pytest.mark.parametrize("on_grid", [True, False])
def test_auc_borji_estimates_the_exact_auc(sphere, on_grid):
    rng = np.random.default_rng(21 + on_grid)
    h, w = 8, 14
    # Low near the poles, where planar and sphere negatives differ most.
    pred = 0.5 * rng.random((h, w)) + 0.5 * np.sin((np.arange(h)[:, None] + 0.5) * math.pi / h)
    if on_grid:  # levels k/8: every distinct value is a threshold and Borji's target is the map's own AUC
        pred = np.round(8 * pred)
    pred[0, 0], pred[-1, -1] = 0, pred.max()  # full range: normalising keeps the levels on the grid
    fixations = (rng.random((h, w)) < 0.3) * rng.integers(1, 3, (h, w)) * (pred > 0.5 * pred.max())
    fixations[h // 2, 0] += 1
    step = 0.125 if on_grid else 0.1
    weights = solid_angles(h, w) if sphere else [1.0] * h
    exact, split_std = borji_expectation(pred, fixations, weights, step)
    if on_grid:
        exact_map = pairwise_auc(fixation_pairs(pred, fixations), pixel_pairs(pred, weights))
        assert exact == pytest.approx(exact_map, rel=1e-12)
    splits = 400
    value = auc_borji(pred, fixations, splits=splits, step=step, generator=torch.Generator().manual_seed(1),
                      sphere=sphere)
    assert abs(value - exact) < 4 * split_std / math.sqrt(splits)
    assert split_std / math.sqrt(splits) < 0.01  # the test has power: a wrong weighting is many errors away
    other = borji_expectation(pred, fixations, solid_angles(h, w) if not sphere else [1.0] * h, step)[0]
    assert abs(other - exact) > 12 * split_std / math.sqrt(splits)


def test_auc_borji_batched_and_reproducible():
    pred, _, fixations, _ = random_case((2, 6, 10), seed=2, ties=False)
    first = auc_borji(torch.from_numpy(pred), fixations, splits=10, generator=torch.Generator().manual_seed(3))
    again = auc_borji(torch.from_numpy(pred), fixations, splits=10, generator=torch.Generator().manual_seed(3))
    single = auc_borji(pred[1], fixations[1], splits=10, generator=torch.Generator().manual_seed(4))
    assert first.dtype == torch.float64 and first.shape == (2,)
    assert torch.equal(first, again)
    assert 0 < single < 1


# ---------------------------------------------------------------------------------------------------------------
# Conventions and edge cases


def test_constant_map_scores_chance_on_every_auc():
    pred = np.full((4, 6), 2.5)
    fixations = np.zeros((4, 6))
    fixations[1, 2], fixations[3, 0] = 2, 1
    others = np.ones((4, 6))
    assert auc_judd(pred, fixations) == pytest.approx(0.5)
    assert pysaliency()[1].general_roc(np.full(3, 2.5), pred.flatten(), judd=1)[0] == pytest.approx(0.5)
    assert sauc(pred, fixations, others) == pytest.approx(0.5)
    assert auc_borji(pred, fixations, splits=5) == pytest.approx(0.5)


def test_empty_batch_and_non_contiguous_input():
    empty = torch.zeros(0, 4, 6)
    for metric in (cc, kld, sim):
        assert metric(empty, empty).shape == (0,)
    for metric in (nss, auc_judd, auc_borji):
        assert metric(empty, empty).shape == (0,)
    assert sauc(empty, empty, empty).shape == (0,)
    pred, gt, fixations, _ = random_case((2, 5, 7), seed=9, ties=False)
    transposed = torch.from_numpy(pred.transpose(0, 2, 1).copy()).transpose(1, 2)
    assert not transposed.is_contiguous()
    torch.testing.assert_close(cc(transposed, gt), torch.from_numpy(cc(pred, gt)))
    torch.testing.assert_close(nss(transposed, fixations), torch.from_numpy(nss(pred, fixations)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    pred, gt, fixations, others = random_case((2, 6, 10), seed=4, ties=True)
    on_cpu = all_metrics(torch.from_numpy(pred), gt, fixations, others, sphere=True)
    on_cuda = all_metrics(torch.from_numpy(pred).cuda(), gt, fixations, others, sphere=True)
    for name in on_cpu:
        assert on_cuda[name].device.type == "cuda"
        torch.testing.assert_close(on_cuda[name].cpu(), on_cpu[name], rtol=1e-9, atol=1e-12)
    borji_cpu = auc_borji(torch.from_numpy(pred), fixations, generator=torch.Generator().manual_seed(0))
    borji_cuda = auc_borji(torch.from_numpy(pred).cuda(), fixations, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(borji_cuda.cpu(), borji_cpu)


def good():
    pred, gt, fixations, others = random_case((2, 5, 7), seed=1, ties=False)
    return pred, gt, fixations, others


def with_value(array, index, value):
    array = array.copy()
    array[index] = value
    return array


BAD_INPUTS = [
    # (call, exception, words the message must contain)
    (lambda p, g, f, o: cc([[1.0, 2.0]], g), TypeError, "pred must be a torch.Tensor or numpy.ndarray"),
    (lambda p, g, f, o: cc(p.astype(complex), g), TypeError, "pred must hold real numbers"),
    (lambda p, g, f, o: cc(p[0, 0], g[0, 0]), ValueError, "pred must have shape [H, W] or [B, H, W]"),
    (lambda p, g, f, o: cc(p[None], g[None]), ValueError, "pred must have shape [H, W] or [B, H, W]"),
    (lambda p, g, f, o: cc(p, g[:, :, :-1]), ValueError, "gt must have the shape of pred"),
    (lambda p, g, f, o: nss(p, f[0]), ValueError, "fixations must have the shape of pred"),
    (lambda p, g, f, o: cc(with_value(p, (0, 1, 1), np.nan), g), ValueError, "pred must be finite"),
    (lambda p, g, f, o: sim(p, with_value(g, (1, 0, 0), np.inf)), ValueError, "gt must be finite"),
    (lambda p, g, f, o: cc(with_value(p, 1, 3.0), g), ValueError, "pred[1] is constant"),
    (lambda p, g, f, o: cc(p, with_value(g, 0, 0.0)), ValueError, "gt[0] is constant"),
    (lambda p, g, f, o: nss(with_value(p, 0, 1.0)[0], f[0]), ValueError, "pred is constant"),
    (lambda p, g, f, o: kld(p, with_value(g, (1, 2, 2), -0.1)), ValueError, "gt must be non-negative"),
    (lambda p, g, f, o: sim(p - 0.5, g), ValueError, "pred must be non-negative"),
    (lambda p, g, f, o: kld(p, with_value(g, 1, 0.0)), ValueError, "gt[1] is all zero"),
    (lambda p, g, f, o: nss(p, f + 0.5), ValueError, "fixations must hold non-negative integer"),
    (lambda p, g, f, o: auc_judd(p, with_value(f, (0, 0, 0), -1.0)), ValueError, "fixations must hold non-negative"),
    (lambda p, g, f, o: auc_judd(p, with_value(f, 1, 0.0)), ValueError, "fixations[1] has no fixations"),
    (lambda p, g, f, o: auc_borji(p[0], 0 * f[0]), ValueError, "fixations has no fixations"),
    (lambda p, g, f, o: sauc(p, f, with_value(o, 0, 0.0)), ValueError, "other_fixations[0] has no fixations"),
    (lambda p, g, f, o: sauc(p, f, o[:1]), ValueError, "other_fixations must have the shape of pred"),
    (lambda p, g, f, o: auc_borji(p, f, splits=0), ValueError, "splits must be a positive int"),
    (lambda p, g, f, o: auc_borji(p, f, splits=2.0), ValueError, "splits must be a positive int"),
    (lambda p, g, f, o: auc_borji(p, f, step=0), ValueError, "step must be a number in (0, 1]"),
    (lambda p, g, f, o: auc_borji(p, f, step=1.5), ValueError, "step must be a number in (0, 1]"),
    (lambda p, g, f, o: auc_borji(p, f, generator=0), TypeError, "generator must be a torch.Generator"),
    (lambda p, g, f, o: kld(p, g, sphere="yes"), TypeError, "sphere must be True or False"),
]


@pytest.mark.parametrize("call, error, words", BAD_INPUTS, ids=[words for _, _, words in BAD_INPUTS])
def test_bad_input_is_a_named_error(call, error, words):
    with pytest.raises(error) as info:
        call(*good())
    assert words in str(info.value)

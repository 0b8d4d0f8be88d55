"""Saliency metrics for equirectangular panoramas: the MIT-benchmark definitions, weighted by pixel solid angle.

Every metric takes a predicted saliency map ``pred`` and a ground truth of the same shape, ``[H, W]`` or
``[B, H, W]``, as torch tensors (CPU or CUDA) or numpy arrays, and computes in float64 on ``pred``'s device (the
first tensor argument's device when ``pred`` is a numpy array). An ``[H, W]`` input gives a Python float; a
``[B, H, W]`` input gives one value per item: a float64 tensor of shape ``[B]`` on that device, or a float64 numpy
array when ``pred`` is a numpy array.

Ground truths are either a saliency map ``gt`` (non-negative, for KLD and SIM a distribution) or a fixation count
map ``fixations``: non-negative integers, a pixel fixated k times counting k times.

With ``sphere=False`` the metrics are the planar ones exactly as pysaliency computes them. With ``sphere=True``
(the default) every pixel of row ``i`` stands for the solid angle ``A_i`` it covers (``pixel_solid_angle``): means
and variances are ``A``-weighted, a map's distribution is ``P_ij = s_ij A_i / sum(s A)`` and pixels used as
negatives count in proportion to ``A_i``. Fixations are not weighted: each is one event, a sample already drawn on
the sphere, so a region that covers more solid angle already collects proportionally more of them; weighting
them by ``A_i`` as well would count the area twice. With all ``A_i`` equal the two modes agree.

Bad input (wrong type or rank, shape mismatch, non-finite values, negative values or an empty sum where a
distribution or counts are needed, no fixations, a constant map where a metric is undefined) raises a ValueError
or TypeError that names the argument.
"""

import math
import numbers

import numpy as np
import torch

from sconv.functional.common import pixel_solid_angle

__all__ = ["cc", "nss", "kld", "sim", "auc_judd", "auc_borji", "sauc"]

# MATLAB's eps, the regulariser of the MIT benchmark's KLdiv (and pysaliency's MIT_KLDiv).
KLD_EPS = 2.2204e-16


# ---------------------------------------------------------------------------------------------------------------
# Input handling


def _device_of(*maps):
    for m in maps:
        if isinstance(m, torch.Tensor):
            return m.device
    return torch.device("cpu")


def _as_float64(x, name, device):
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got numpy dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    elif isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must hold real numbers, got {x.dtype}")
        x = x.detach()
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    x = x.to(device=device, dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, found NaN or Inf")
    return x


def _load(pred, sphere, **others):
    """``pred`` and the maps in ``others`` as float64 ``[B, H, W]`` tensors on one device.

    Returns ``(pred, [others...], batched, as_numpy)``.
    """
    if not isinstance(sphere, bool):
        raise TypeError(f"sphere must be True or False, got {sphere!r}")
    device = _device_of(pred, *others.values())
    pred_t = _as_float64(pred, "pred", device)
    if pred_t.dim() not in (2, 3):
        raise ValueError(f"pred must have shape [H, W] or [B, H, W], got shape {tuple(pred_t.shape)}")
    if pred_t.shape[-2] < 1 or pred_t.shape[-1] < 1:
        raise ValueError(f"pred must have H, W >= 1, got shape {tuple(pred_t.shape)}")
    others_t = []
    for name, value in others.items():
        value_t = _as_float64(value, name, device)
        if value_t.shape != pred_t.shape:
            raise ValueError(f"{name} must have the shape of pred {tuple(pred_t.shape)}, got {tuple(value_t.shape)}")
        others_t.append(value_t)
    batched = pred_t.dim() == 3
    if not batched:
        pred_t = pred_t.unsqueeze(0)
        others_t = [o.unsqueeze(0) for o in others_t]
    return pred_t, others_t, batched, isinstance(pred, np.ndarray)


def _item(name, batched, b):
    return f"{name}[{b}]" if batched else name


def _check_varies(x, name, metric, batched):
    flat = x.flatten(1)
    constant = (flat.amax(1) == flat.amin(1)).nonzero()
    if len(constant):
        raise ValueError(f"{_item(name, batched, int(constant[0]))} is constant: {metric} is undefined for it")


def _check_distribution(x, name, batched):
    if (x < 0).any():
        raise ValueError(f"{name} must be non-negative (a saliency distribution), min is {float(x.min())}")
    empty = (x.flatten(1).sum(1) == 0).nonzero()
    if len(empty):
        raise ValueError(f"{_item(name, batched, int(empty[0]))} is all zero: not a distribution")


def _check_counts(x, name, batched):
    if (x < 0).any() or (x != x.round()).any():
        raise ValueError(f"{name} must hold non-negative integer fixation counts")
    empty = (x.flatten(1).sum(1) == 0).nonzero()
    if len(empty):
        raise ValueError(f"{_item(name, batched, int(empty[0]))} has no fixations")


def _pixel_weight(x, sphere):
    """Weight of every pixel of ``x [B, H, W]``, shape ``[H, W]``: its solid angle ``A_i``, or 1 when planar."""
    h, w = x.shape[-2:]
    if sphere:
        row = pixel_solid_angle(h, w, device=x.device)
    else:
        row = torch.ones(h, dtype=torch.float64, device=x.device)
    return row[:, None].expand(h, w)


def _result(values, metric, batched, as_numpy):
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):  # only reachable when a spread or sum underflows float64
        raise ValueError(f"{metric} is not finite for item {int(bad[0])}: its maps' values are too close together")
    if not batched:
        return float(values[0])
    return values.cpu().numpy() if as_numpy else values


# ---------------------------------------------------------------------------------------------------------------
# Weighted statistics over the last two dimensions


def _mean(x, weight):
    return (x * weight).sum((-2, -1)) / weight.sum()


def _standardise(x, weight):
    centred = x - _mean(x, weight)[:, None, None]
    return centred / _mean(centred * centred, weight).sqrt()[:, None, None]


def _distribution(x, weight):
    mass = x * weight
    return mass / mass.sum((-2, -1), keepdim=True)


def _per_item(metric, *maps):
    """``metric`` applied to each item of the ``[B, H, W]`` maps, stacked to ``[B]``."""
    if len(maps[0]) == 0:
        return maps[0].new_zeros(0)
    return torch.stack([metric(*items) for items in zip(*maps)])


def _roc_area(scores, positives, negatives, judd):
    """Trapezoidal area under the ROC curve of weighted positives against weighted negatives.

    ``scores``, ``positives``, ``negatives``: ``[N]``; ``positives[k]`` and ``negatives[k]`` are the positive and
    negative mass at score ``scores[k]``. Thresholds at every score (``judd=False``: the area is then
    P(positive > negative) + P(positive == negative) / 2) or only at the positives' scores (``judd=True``, the
    AUC-Judd curve), plus the ends (0, 0) and (1, 1).
    """
    order = torch.argsort(scores, descending=True)
    scores = scores[order]
    hits = positives[order].cumsum(0) / positives.sum()
    false_alarms = negatives[order].cumsum(0) / negatives.sum()
    # One ROC point per distinct score: the last index of each run of equal scores.
    last = torch.ones_like(scores, dtype=torch.bool)
    last[:-1] = scores[:-1] != scores[1:]
    hits, false_alarms = hits[last], false_alarms[last]
    if judd:
        keep = torch.diff(hits, prepend=hits.new_zeros(1)) > 0
        hits, false_alarms = hits[keep], false_alarms[keep]
    zero, one = hits.new_zeros(1), hits.new_ones(1)
    tpr = torch.cat([zero, hits, one])
    fpr = torch.cat([zero, false_alarms, one])
    return torch.trapezoid(tpr, fpr)


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def cc(pred, gt, sphere=True):
    """Pearson correlation coefficient between two saliency maps.

    ``sum A (p - mean_A p)(g - mean_A g) / sqrt(sum A (p - mean_A p)^2 * sum A (g - mean_A g)^2)`` with
    ``mean_A x = sum A x / sum A`` (``A_i`` = 1 when ``sphere=False``: pysaliency's ``CC``).

    Args:
        pred: predicted map, ``[H, W]`` or ``[B, H, W]``, any real values.
        gt: ground-truth map, same shape.
        sphere: weight pixels by their solid angle.

    Returns:
        float, or ``[B]`` values. A constant ``pred`` or ``gt`` (no variance) is a ValueError: the correlation is
        undefined (pysaliency returns 0 or NaN there).
    """
    pred, (gt,), batched, as_numpy = _load(pred, sphere, gt=gt)
    _check_varies(pred, "pred", "CC", batched)
    _check_varies(gt, "gt", "CC", batched)
    weight = _pixel_weight(pred, sphere)
    value = _mean(_standardise(pred, weight) * _standardise(gt, weight), weight)
    return _result(value, "CC", batched, as_numpy)


def nss(pred, fixations, sphere=True):
    """Normalised scanpath saliency: the standardised prediction averaged over fixations.

    ``sum_f z(f) / N`` with ``z = (p - mean_A p) / std_A p`` (population standard deviation, ``A``-weighted when
    ``sphere=True``) and ``N`` the number of fixations. The mean over fixations is not area-weighted: fixations are
    events, already samples on the sphere (see the module docstring). ``sphere=False`` is pysaliency's ``NSS``
    averaged over fixations.

    Args:
        pred: predicted map, ``[H, W]`` or ``[B, H, W]``, any real values.
        fixations: fixation counts, same shape (non-negative integers, at least one fixation per item).
        sphere: weight pixels by their solid angle in the map's mean and standard deviation.

    Returns:
        float, or ``[B]`` values. A constant ``pred`` is a ValueError (it cannot be standardised).
    """
    pred, (fixations,), batched, as_numpy = _load(pred, sphere, fixations=fixations)
    _check_counts(fixations, "fixations", batched)
    _check_varies(pred, "pred", "NSS", batched)
    z = _standardise(pred, _pixel_weight(pred, sphere))
    value = (z * fixations).sum((-2, -1)) / fixations.sum((-2, -1))
    return _result(value, "NSS", batched, as_numpy)


def kld(pred, gt, sphere=True):
    """Kullback-Leibler divergence of the predicted distribution from the ground-truth one, as the MIT benchmark.

    ``sum_ij Q_ij log(eps + Q_ij / (P_ij + eps))`` with ``P = s A / sum(s A)`` for ``pred``, ``Q`` likewise for
    ``gt`` and ``eps = 2.2204e-16``. ``sphere=False`` (``A_i`` = 1) is pysaliency's ``MIT_KLDiv(pred, gt)``.

    Args:
        pred: predicted map, ``[H, W]`` or ``[B, H, W]``, non-negative, not all zero.
        gt: ground-truth map, same shape and constraints.
        sphere: distributions over solid angle rather than pixels.

    Returns:
        float, or ``[B]`` values (0 for equal distributions, larger is worse).
    """
    pred, (gt,), batched, as_numpy = _load(pred, sphere, gt=gt)
    _check_distribution(pred, "pred", batched)
    _check_distribution(gt, "gt", batched)
    weight = _pixel_weight(pred, sphere)
    p, q = _distribution(pred, weight), _distribution(gt, weight)
    value = (q * torch.log(KLD_EPS + q / (p + KLD_EPS))).sum((-2, -1))
    return _result(value, "KLD", batched, as_numpy)


def sim(pred, gt, sphere=True):
    """Similarity (histogram intersection) of two saliency distributions: ``sum_ij min(P_ij, Q_ij)``.

    ``P = s A / sum(s A)`` for ``pred``, ``Q`` likewise for ``gt``. ``sphere=False`` is pysaliency's ``SIM``.

    Args:
        pred: predicted map, ``[H, W]`` or ``[B, H, W]``, non-negative, not all zero.
        gt: ground-truth map, same shape and constraints.
        sphere: distributions over solid angle rather than pixels.

    Returns:
        float, or ``[B]`` values in [0, 1] (1 for equal distributions).
    """
    pred, (gt,), batched, as_numpy = _load(pred, sphere, gt=gt)
    _check_distribution(pred, "pred", batched)
    _check_distribution(gt, "gt", batched)
    weight = _pixel_weight(pred, sphere)
    value = torch.minimum(_distribution(pred, weight), _distribution(gt, weight)).sum((-2, -1))
    return _result(value, "SIM", batched, as_numpy)


def auc_judd(pred, fixations, sphere=True):
    """AUC-Judd: ROC area of fixated against all pixels, with thresholds at the fixated values.

    Positives are the fixations (a pixel fixated k times counts k times, not area-weighted: fixations are events).
    Negatives are all pixels, each counting ``A_i`` (uniform over the sphere; uniform over pixels when
    ``sphere=False``). For each threshold ``t`` among the fixated values, the hit rate is the share of fixations
    with ``pred >= t`` and the false-alarm rate the share of negative mass with ``pred >= t``; the area is the
    trapezoidal one through (0, 0), those points and (1, 1). ``sphere=False`` is pysaliency's
    ``general_roc(pred[fixations], pred.flatten(), judd=1)`` (the MIT code instead leaves fixated pixels out of the
    negatives; pysaliency's ``AUC_Judd`` also jitters the map).

    Args:
        pred: predicted map, ``[H, W]`` or ``[B, H, W]``, any real values.
        fixations: fixation counts, same shape (non-negative integers, at least one fixation per item).
        sphere: negatives weighted by solid angle.

    Returns:
        float, or ``[B]`` values in [0, 1] (0.5 for a constant map).
    """
    pred, (fixations,), batched, as_numpy = _load(pred, sphere, fixations=fixations)
    _check_counts(fixations, "fixations", batched)
    negatives = _pixel_weight(pred, sphere).flatten()
    value = _per_item(lambda p, f: _roc_area(p.flatten(), f.flatten(), negatives, judd=True), pred, fixations)
    return _result(value, "AUC-Judd", batched, as_numpy)


def sauc(pred, fixations, other_fixations, sphere=True):
    """Shuffled AUC: ROC area of the fixations against fixations from other stimuli, thresholds at every value.

    Positives are ``fixations``, negatives ``other_fixations`` (for example all fixations of the other frames or
    videos, pooled on this grid), each counted as often as it occurs. The area equals
    ``P(pred(f) > pred(g)) + P(pred(f) == pred(g)) / 2`` for a random fixation ``f`` and a random other fixation
    ``g``, as pysaliency's ``general_roc(positives, negatives, judd=0)`` (its ``sAUC``; the MIT code instead
    thresholds at the fixated values over random subsets of the negatives).

    ``sphere`` is accepted for a uniform signature and changes nothing: both positives and negatives are fixations,
    events already sampled on the sphere, so a region of larger solid angle already holds proportionally more of
    them. Weighting them by ``A_i`` again would bias the negatives toward the equator.

    Args:
        pred: predicted map, ``[H, W]`` or ``[B, H, W]``, any real values.
        fixations: fixation counts on this stimulus, same shape (non-negative integers, at least one per item).
        other_fixations: fixation counts from other stimuli, same shape and constraints.
        sphere: ignored (see above).

    Returns:
        float, or ``[B]`` values in [0, 1].
    """
    pred, (fixations, other_fixations), batched, as_numpy = _load(
        pred, sphere, fixations=fixations, other_fixations=other_fixations
    )
    _check_counts(fixations, "fixations", batched)
    _check_counts(other_fixations, "other_fixations", batched)
    value = _per_item(
        lambda p, f, o: _roc_area(p.flatten(), f.flatten(), o.flatten(), judd=False), pred, fixations, other_fixations
    )
    return _result(value, "sAUC", batched, as_numpy)


def auc_borji(pred, fixations, splits=100, step=0.1, generator=None, sphere=True):
    """AUC-Borji: ROC area of the fixations against random pixels, averaged over ``splits`` draws.

    As the MIT benchmark's ``AUC_Borji``: the map is normalised to [0, 1] (``(s - min) / (max - min)``; a constant
    map becomes 0 and scores 0.5); each split draws as many random pixels as there are fixations, with probability
    proportional to ``A_i`` (uniform over the sphere; uniform over pixels when ``sphere=False``), and thresholds at
    ``0, step, 2 step, ...`` give hit rates (share of fixations at or above) and false-alarm rates (share of the
    drawn pixels at or above) between (0, 0) and (1, 1); the trapezoidal areas are averaged. Fixations count as
    often as they occur and are not area-weighted (they are events). The estimate approaches the exact
    (area-weighted) AUC of the map quantised to ``step``, with a standard error that shrinks as
    ``1 / sqrt(splits * N)`` for ``N`` fixations.

    Args:
        pred: predicted map, ``[H, W]`` or ``[B, H, W]``, any real values.
        fixations: fixation counts, same shape (non-negative integers, at least one fixation per item).
        splits: number of random draws (positive int).
        step: threshold spacing on the normalised map, in (0, 1].
        generator: ``torch.Generator`` for the draws (they run on its device), or None for the global one.
        sphere: draw the random pixels uniformly over the sphere.

    Returns:
        float, or ``[B]`` values in [0, 1].
    """
    if not isinstance(splits, numbers.Integral) or isinstance(splits, bool) or splits < 1:
        raise ValueError(f"splits must be a positive int, got {splits!r}")
    if not isinstance(step, numbers.Real) or isinstance(step, bool) or not 0 < step <= 1:
        raise ValueError(f"step must be a number in (0, 1], got {step!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    pred, (fixations,), batched, as_numpy = _load(pred, sphere, fixations=fixations)
    _check_counts(fixations, "fixations", batched)
    w = pred.shape[-1]
    draw_device = generator.device if generator is not None else pred.device
    row_weight = _pixel_weight(pred, sphere)[:, 0].to(draw_device)
    # The MIT code's thresholds 0:step:max; those above the map's maximum add only (0, 0) points.
    thresholds = torch.arange(math.floor(1 / step + 1e-9), -1, -1, dtype=torch.float64, device=pred.device) * step

    def borji(p, f):
        low, high = p.min(), p.max()
        normalised = (p - low) / (high - low) if high > low else torch.zeros_like(p)
        count = int(f.sum())
        fixated = f > 0
        hits = ((normalised[fixated] >= thresholds[:, None]) * f[fixated]).sum(1) / count
        rows = torch.multinomial(row_weight, splits * count, replacement=True, generator=generator)
        cols = torch.randint(w, (splits * count,), generator=generator, device=draw_device)
        drawn = normalised[rows.to(pred.device), cols.to(pred.device)].view(splits, count).sort(1).values
        at_or_above = count - torch.searchsorted(drawn, thresholds.expand(splits, -1).contiguous(), side="left")
        false_alarms = at_or_above / count
        zero, one = pred.new_zeros(splits, 1), pred.new_ones(splits, 1)
        tpr = torch.cat([zero, hits.expand(splits, -1), one], 1)
        fpr = torch.cat([zero, false_alarms, one], 1)
        return torch.trapezoid(tpr, fpr, dim=1).mean()

    value = _per_item(borji, pred, fixations)
    return _result(value, "AUC-Borji", batched, as_numpy)

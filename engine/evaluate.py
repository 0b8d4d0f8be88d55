"""The honest test: each test video in frame order, as a deployed system runs it, scored with the sphere-weighted
metrics; the teacher-forced (oracle) figures apart. ``predict_video`` is also the demo's code path.

Deployed, a system has no recorded gaze for a new video: the first frames get the equator prior as their previous
map, every later frame the model's own prediction for the frame ``prev_offset`` earlier, normalised like the ground
truth it replaces (``datasets.data.normalise_previous``); a ConvLSTM carries its state through the whole video.
"""

import os

import torch
from tqdm import tqdm

import ref
from datasets.data import center_prior, normalise_previous, reference_mass
from engine.common import LATEST, architecture_of, load_checkpoint, load_model_state, test_keys, write_json
from sconv import metrics

__all__ = [
    "METRICS",
    "ORACLE_NOTE",
    "predict_video",
    "previous_map_tools",
    "own_previous_maps",
    "test_keys",
    "evaluate",
    "format_metrics",
    "load_trained",
    "run_test",
]

METRICS = ("CC", "NSS", "KLD", "SIM", "AUC-J", "AUC-B", "sAUC")
ORACLE_NOTE = (
    "oracle (teacher-forced): each frame's previous map is the ground-truth map of the earlier frame, made from "
    "gaze recorded for this video, which a deployed system never has; not comparable with deployed scores"
)


def previous_map_tools(frame_h, frame_w):
    """``(prior [1, H, W], normalise)``: the first frames' previous map and the function that makes a prediction
    ``[..., H, W]`` into a previous map (both as the datasets make them)."""
    mass = reference_mass(frame_h, frame_w, ref.gaussian_sigma)
    prior = normalise_previous(torch.from_numpy(center_prior(frame_h, frame_w)), mass)[None]
    return prior, lambda maps: normalise_previous(maps, mass)


@torch.no_grad()
def predict_video(model, steps, opt, device):
    """Run ``model`` (in eval mode, with a ``step(frame, previous_map, state)`` method) over one video in order.

    ``steps`` yields ``(key, frame [3, H, W], previous)``: ``previous`` is None (the prior), the key of an earlier
    step (that step's prediction, normalised like a ground-truth map, is used: deployed), or a map ``[1, H, W]``
    (used as given: the oracle). Yields ``(key, prediction [1, H, W] on the ground truth's scale, float32 CPU,
    previous map used)``. The model's state (ConvLSTM) runs through the whole video.
    """
    prior, normalise = previous_map_tools(opt.frame_h, opt.frame_w)
    predictions, state = {}, None
    for key, frame, previous in steps:
        if previous is None:
            previous_map = prior
        elif isinstance(previous, torch.Tensor):
            previous_map = previous
        else:
            previous_map = predictions.get(previous, prior)  # a frame not predicted (skipped jpg): the prior
        inputs = frame[None].to(device), (previous_map[None] * opt.target_scale).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opt.bf16):
            out, state = model.step(*inputs, state)
        prediction = out[0].float().cpu() / opt.target_scale
        if not torch.isfinite(prediction).all():
            raise ValueError(f"the model's prediction for frame {key!r} is not finite: its weights have diverged")
        predictions[key] = normalise(prediction)
        yield key, prediction, previous_map


@torch.no_grad()
def own_previous_maps(model, earlier_frames, start_maps, counts, opt, normalise):
    """The previous maps a deployed model would get, made by rolling it over the earlier frames as deployment does.

    ``earlier_frames`` ``[B, K, 3, H, W]``: row ``b`` holds its chain of ``counts[b]`` (1 to K, a CPU tensor) earlier
    frames, oldest first, in the last ``counts[b]`` slots; ``start_maps`` ``[B, 1, H, W]`` (ground truth's scale) is
    the previous map of each chain's oldest frame. The model, in eval mode, predicts each frame of the chain from the
    previous map made for it (the start map, then its own prediction normalised by ``normalise``,
    ``previous_map_tools(H, W)[1]``, as :func:`predict_video` does). Returns the normalised prediction for each
    chain's newest frame ``[B, 1, H, W]``, on the ground truth's scale; ``model`` is left in the mode it was in.
    Training's ``--own-previous`` (K = ``--own-previous-steps``)."""
    steps = earlier_frames.shape[1]
    first_step = steps - counts  # the slot where each row's chain begins
    maps = start_maps
    training = model.training
    model.eval()
    try:
        for step in range(steps - int(counts.max()), steps):
            rows = (first_step <= step).nonzero()[:, 0].to(maps.device)  # the chains running at this slot
            with torch.autocast(earlier_frames.device.type, dtype=torch.bfloat16, enabled=opt.bf16):
                out = model(earlier_frames[rows, step], maps[rows] * opt.target_scale)
            maps = maps.index_copy(0, rows, normalise(out.float() / opt.target_scale))
    finally:
        model.train(training)
    return maps


def score(pred, gt, fixations, other_fixations, generator):
    """Sphere-weighted metrics of ``pred [N, H, W]`` (any real values), per frame: name -> ``[N]`` float64."""
    pred = pred.double()
    low = pred.amin((-2, -1), keepdim=True)
    high = pred.amax((-2, -1), keepdim=True)
    pred = (pred - low) / (high - low).clamp(min=torch.finfo(pred.dtype).tiny)
    return {
        "CC": metrics.cc(pred, gt),
        "NSS": metrics.nss(pred, fixations),
        "KLD": metrics.kld(pred, gt),
        "SIM": metrics.sim(pred, gt),
        "AUC-J": metrics.auc_judd(pred, fixations),
        "AUC-B": metrics.auc_borji(pred, fixations, generator=generator),
        "sAUC": metrics.sauc(pred, fixations, other_fixations),
    }


def evaluate(model, dataset, opt, device, oracle=False, per_frame=False):
    """Mean sphere-weighted metrics over the test frames (the first ``--limit`` frames in video order).

    Returns ``{"model": {...}, "center_prior": {...}}``: the model run as deployed (``predict_video``, its own
    previous predictions) and the equator prior. With ``oracle``, also ``"oracle_model"`` (the same frames with the
    ground-truth previous maps: teacher-forced) and ``"oracle_copy_previous"`` (the ground-truth previous map itself
    as the prediction). sAUC's negatives are the fixations of the evaluated frames of the other videos (of the other
    frames when there is a single video). Deterministic: AUC-Borji draws from its own generator. With
    ``per_frame``, also ``"per_frame"``: row name -> ``{(video, frame): {metric: value}}``.
    """
    keys = test_keys(dataset, opt.limit)
    fixations_of = {key: torch.from_numpy(dataset.fixations_of(*key)).double() for key in keys}
    per_video = {}
    for (vid, _), fixations in fixations_of.items():
        per_video[vid] = per_video.get(vid, 0) + fixations
    everything = sum(per_video.values())
    videos = {}
    for vid, fid in keys:
        videos.setdefault(vid, []).append(fid)

    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(opt.seed)
    prior, _ = previous_map_tools(opt.frame_h, opt.frame_w)
    totals, frames_of_row = {}, {}

    def add(name, maps, gt, fixations, others):
        scores = score(maps, gt, fixations, others, generator)
        for metric, values in scores.items():
            totals.setdefault(name, {}).setdefault(metric, 0.0)
            totals[name][metric] += float(values.sum())
        if per_frame:
            for index, fid in enumerate(fids):
                frames_of_row.setdefault(name, {})[vid, fid] = {m: float(v[index]) for m, v in scores.items()}

    for vid, fids in tqdm(videos.items(), desc="evaluate", leave=False, disable=None):
        gt = torch.stack([dataset.target(vid, fid)[0] for fid in fids]).double()
        fixations = torch.stack([fixations_of[vid, fid] for fid in fids])
        others = torch.stack(
            [everything - (per_video[vid] if len(per_video) > 1 else fixations_of[vid, fid]) for fid in fids]
        )
        deployed = ((fid, dataset.frame(vid, fid), dataset.previous_key(vid, fid)) for fid in fids)
        predictions = torch.stack([p[0] for _, p, _ in predict_video(model, deployed, opt, device)])
        add("model", predictions, gt, fixations, others)
        add("center_prior", prior.double().expand_as(gt), gt, fixations, others)
        if oracle:
            forced = ((fid, dataset.frame(vid, fid), dataset.previous_map(vid, fid)) for fid in fids)
            outputs = list(predict_video(model, forced, opt, device))
            add("oracle_model", torch.stack([p[0] for _, p, _ in outputs]), gt, fixations, others)
            add("oracle_copy_previous", torch.stack([m[0] for _, _, m in outputs]).double(), gt, fixations, others)
    model.train(was_training)
    results = {name: {key: total / len(keys) for key, total in values.items()} for name, values in totals.items()}
    if per_frame:
        results["per_frame"] = frames_of_row
    return results


ROW_NAMES = {
    "model": "model",
    "center_prior": "equator prior",
    "oracle_model": "ORACLE model",
    "oracle_copy_previous": "ORACLE copy GT",
}


def format_metrics(name, values):
    return f"{ROW_NAMES.get(name, name):>15s}  " + "  ".join(f"{metric} {values[metric]:.4f}" for metric in METRICS)


def load_trained(opt, device, build_model):
    """The model of ``-loadModel`` (default: the experiment's latest checkpoint), with the checkpoint's settings."""
    path = opt.loadModel or os.path.join(opt.save_dir, LATEST)
    checkpoint = load_checkpoint(path, opt.model)
    for name, value in architecture_of(checkpoint["opts"]).items():
        setattr(opt, name, value)
    model = build_model(opt)
    load_model_state(model, checkpoint, path)
    return model.to(device).eval(), path, checkpoint["epoch"]


def run_test(opt, device, build_model, make_test_set):
    """``-test``: the deployed scores of the checkpoint (and with ``--oracle`` the teacher-forced ones, labelled),
    printed and written to ``<exp>/<expID>/test_metrics.json``. ``make_test_set()`` is called once the checkpoint's
    settings (frame size, previous-map offset) are in ``opt``."""
    model, path, epoch = load_trained(opt, device, build_model)
    test_set = make_test_set()
    results = evaluate(model, test_set, opt, device, oracle=opt.oracle)
    report = {
        "checkpoint": os.path.abspath(path),
        "epoch": epoch,
        "test_frames": len(test_keys(test_set, opt.limit)),
        "device": str(device),
        "metrics": "sphere-weighted",
        "evaluation": "deployed: each test video in frame order; previous map = the model's own prediction of the "
        f"frame {opt.prev_offset} earlier (the equator prior for the first frames)",
        "model": results["model"],
        "center_prior": results["center_prior"],
    }
    angles = getattr(test_set, "angles", None)  # --use-equirect-rotate: the test videos rotated (FixedRotation)
    if angles is not None:
        report["rotation_degrees"] = {"rot_y": angles[0], "rot_z": angles[1]}
        report["evaluation"] += f"; every test frame rotated by rot_y = {angles[0]:g}, rot_z = {angles[1]:g} degrees"
    if opt.oracle:
        report["oracle"] = {
            "note": ORACLE_NOTE,
            "model": results["oracle_model"],
            "copy_previous_ground_truth": results["oracle_copy_previous"],
        }
    os.makedirs(opt.save_dir, exist_ok=True)
    out_path = os.path.join(opt.save_dir, "test_metrics.json")
    write_json(out_path, report)
    print(
        f"{opt.model} after {epoch} epochs, {report['test_frames']} test frames, sphere-weighted; "
        f"{report['evaluation']}:"
    )
    for name in ("model", "center_prior"):
        print(format_metrics(name, results[name]))
    if opt.oracle:
        print(f"{ORACLE_NOTE}:")
        for name in ("oracle_model", "oracle_copy_previous"):
            print(format_metrics(name, results[name]))
    print(f"written to {out_path}")
    return report

"""Latitude generalisation: train near the equator, test toward the poles (issue 22, docs/latitude.md).

Scenes are rendered here, deterministically, on the device: a structured background (plane waves on the sphere) and
three textured objects, each a flat shape tangent to the sphere (gnomonic projection), so an object far from the
equator appears on the panorama stretched as a real one would. One object belongs to the salient shapes (cross, E,
ring) and two to the distractors (square, L, disc): telling them apart needs shape, not colour or contrast. The target
is the salient object's mask (anti-aliased). Training scenes put every object's centre within 20 degrees of the
equator; test scenes within one band (0-20, 20-45, 45-70 degrees, either hemisphere). The network gets the frame and
a zero previous map, is trained with Adam on the solid-angle-weighted BCE, and is scored per band with the
sphere-weighted CC (``sconv.metrics.cc(..., sphere=True)``) of ``sigmoid(logits)`` against the mask, averaged over
the band's test scenes (one fixed test set for every model and seed).

    python benchmarks/latitude_generalisation.py --out DIR [--sizes 32x64 64x128] [--models paper planar ...]
        [--seeds 3] [--steps 600 [400]] [--batch 32 [16]] [--lr 1e-3] [--n-test 128] [--budget-min 4 [3.5]]

Writes ``DIR/latitude.json`` (after every run, so a cut-off run keeps what it finished) and ``DIR/latitude.png``
(CC against latitude band, mean and spread over seeds, one panel per size). ``--plot-only DIR/latitude.json``
redraws the plot.
"""

import argparse
import contextlib
import io
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.data import atomic_write_bytes  # noqa: E402
from models.baseline_unet import SphericalUNet  # noqa: E402
from sconv.functional.common import colatitudes, longitudes, pixel_solid_angle  # noqa: E402
from sconv.functional.rotate import rotate_equirect  # noqa: E402
from sconv.metrics import cc  # noqa: E402

MODELS = {
    "paper": dict(),  # the paper's Spherical U-Net
    "planar": dict(conv_type="standard", planar_padding="circular"),  # its planar twin
    "resolved": dict(kernel_basis="resolved"),  # paper's nodes, kernels restricted to what the equator resolves
    "smooth": dict(kernel_basis="smooth"),  # paper's nodes, smooth kernels
    "nodes3x6": dict(kernel_size=(3, 6)),  # every crown layer with (3, 6) nodes
    "maxpool": dict(use_spooling=False),  # paper's, nn.MaxPool2d instead of spherical pooling
    "sphereconv": dict(conv_type="sphereconv"),  # 3 x 3 SphereNet-style convolutions
    "sphereconv_aa": dict(conv_type="sphereconv", antialias=True),  # sphereconv, input rows low-passed (issue 22)
    "sphereconv_d4": dict(conv_type="sphereconv", symmetric=True),  # sphereconv, D4-symmetric kernels (issue 22)
    # sphereconv, each layer's taps turned per sample within +-40 (+-30, +-20, +-10) degrees while training (issue 22)
    "sphereconv_jitter": dict(conv_type="sphereconv", frame_jitter=math.radians(40)),
    "sphereconv_jitter30": dict(conv_type="sphereconv", frame_jitter=math.radians(30)),
    "sphereconv_jitter20": dict(conv_type="sphereconv", frame_jitter=math.radians(20)),
    "sphereconv_jitter10": dict(conv_type="sphereconv", frame_jitter=math.radians(10)),
    "paper_up": dict(upsample="spherical"),  # paper's, bilinear upsampling on the sphere in the decoder
    "smooth_up": dict(kernel_basis="smooth", upsample="spherical"),  # smooth kernels + spherical upsampling
}
TRAIN_BAND = (0.0, 20.0)
TEST_BANDS = ((0.0, 20.0), (20.0, 45.0), (45.0, 70.0))
SALIENT, DISTRACTOR = (0, 1, 2), (3, 4, 5)  # shape ids: cross, E, ring | square, L, disc
SHAPE_RES = 64
EVAL_SEED = 12345


# ---------------------------------------------------------------------------------------------------------------
# Scenes


def shape_bitmaps():
    """``[6, SHAPE_RES, SHAPE_RES]`` float masks in ``[-1, 1]^2`` (row 0 at y = +1, north): cross, E, ring, square,
    L, disc, each filling about the same area of the square."""
    n = SHAPE_RES
    y, x = torch.meshgrid(torch.linspace(1, -1, n), torch.linspace(-1, 1, n), indexing="ij")
    r = torch.hypot(x, y)
    bar = 0.3
    cross = (x.abs() < bar) & (y.abs() < 0.9) | (y.abs() < bar) & (x.abs() < 0.9)
    e_shape = (
        (x > -0.8)
        & (x < 0.8)
        & (y.abs() < 0.9)
        & ~((x > -0.4) & ((y - 0.38).abs() < 0.17) | (x > -0.4) & ((y + 0.38).abs() < 0.17))
    )
    ring = (r < 0.9) & (r > 0.5)
    square = (x.abs() < 0.7) & (y.abs() < 0.7)
    l_shape = (x > -0.8) & (x < 0.8) & (y > -0.9) & (y < 0.9) & ~((x > -0.3) & (y > -0.4))
    disc = r < 0.75
    return torch.stack([cross, e_shape, ring, square, l_shape, disc]).float()


def scene_parameters(batch, band, generator):
    """Random parameters of ``batch`` scenes (CPU float64 tensors) with object centres in the latitude ``band``."""

    def uniform(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)

    sign = torch.where(torch.rand(batch, 3, generator=generator) < 0.5, -1.0, 1.0).double()
    lat = sign * uniform(batch, 3, low=band[0], high=band[1]) * (math.pi / 180)
    lon = (
        uniform(batch, 1, high=2 * math.pi)
        + torch.arange(3) * (2 * math.pi / 3)
        + uniform(batch, 3, low=-0.3, high=0.3)
    )
    shape = torch.stack(
        [
            torch.tensor(SALIENT)[torch.randint(3, (batch,), generator=generator)],
            torch.tensor(DISTRACTOR)[torch.randint(3, (batch,), generator=generator)],
            torch.tensor(DISTRACTOR)[torch.randint(3, (batch,), generator=generator)],
        ],
        dim=1,
    )
    return {
        "lat": lat,
        "lon": lon,
        "shape": shape,
        "size": uniform(batch, 3, low=11.0, high=16.0) * (math.pi / 180),  # half-width, radians
        "turn": uniform(batch, 3, low=-0.5, high=0.5),  # rotation in the tangent plane, radians
        "stripe_freq": uniform(batch, 3, low=0.6, high=1.2),  # stripe cycles per half-width
        "stripe_angle": uniform(batch, 3, high=math.pi),
        "stripe_phase": uniform(batch, 3, high=2 * math.pi),
        "colours": uniform(batch, 3, 2, 3),
        "wave": torch.nn.functional.normalize(
            torch.randn(batch, 6, 3, generator=generator, dtype=torch.float64), dim=-1
        )
        * uniform(batch, 6, 1, low=3.0, high=8.0),
        "wave_phase": uniform(batch, 6, high=2 * math.pi),
        "wave_colour": uniform(batch, 6, 3, low=-1.0, high=1.0),
        "base": uniform(batch, 3, low=0.3, high=0.7),
    }


def sphere_directions(height, width, device):
    """Unit vectors ``[H, W, 3]`` (float32) of the pixel centres (z toward the north pole)."""
    theta = colatitudes(height, dtype=torch.float32, device=device)[:, None]
    phi = longitudes(width, dtype=torch.float32, device=device)[None, :]
    sin_t = torch.sin(theta)
    return torch.stack([sin_t * torch.cos(phi), sin_t * torch.sin(phi), torch.cos(theta).expand(-1, width)], -1)


def tangent_frame(lat, lon):
    """Unit vectors ``(centre, east, north)``, each ``[*S, 3]``, of the points ``(lat, lon)`` (radians, tensors of
    one broadcastable shape ``S``) and of their tangent plane."""
    centre = torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1)
    east = torch.stack([-torch.sin(lon), torch.cos(lon), torch.zeros_like(lon)], -1)
    north = torch.stack([-torch.sin(lat) * torch.cos(lon), -torch.sin(lat) * torch.sin(lon), torch.cos(lat)], -1)
    return centre, east, north


def gnomonic(u, lat, lon):
    """Gnomonic (tangent-plane) coordinates ``(x east, y north)`` of the directions ``u [H, W, 3]`` seen from the
    points ``(lat, lon)`` (radians, any broadcastable shape ``S``), each ``[*S, H, W]``, and ``front``: where they
    are defined (the hemisphere around the point)."""
    centre, east, north = tangent_frame(lat, lon)
    cos_c = (u * centre).sum(-1)
    front = cos_c > 0
    safe = torch.where(front, cos_c, torch.ones_like(cos_c))
    return (u * east).sum(-1) / safe, (u * north).sum(-1) / safe, front


def render(params, size, bitmaps, device, supersample=2, all_objects=False):
    """Render scenes: ``frame [B, 3, H, W]`` in ``[0, 1]`` and ``target [B, 1, H, W]`` (the salient object's
    coverage of each pixel), on ``device`` (float32), anti-aliased by ``supersample``-fold sampling per axis.
    ``all_objects``: ``target [B, 3, H, W]``, every object's coverage, the salient one first."""
    height, width = size[0] * supersample, size[1] * supersample
    p = {
        k: v.to(device=device, dtype=torch.float32) if v.is_floating_point() else v.to(device)
        for k, v in params.items()
    }
    u = sphere_directions(height, width, device)
    # Background: plane waves on the sphere (rotation-invariant in law), a few per colour channel.
    waves = torch.sin(torch.einsum("hwd,bkd->bkhw", u, p["wave"]) + p["wave_phase"][..., None, None])
    frame = p["base"][:, :, None, None] + 0.25 * torch.einsum("bkhw,bkc->bchw", waves, p["wave_colour"]) / math.sqrt(3)
    x, y, front = gnomonic(u, p["lat"][..., None, None], p["lon"][..., None, None])  # [B, 3, H, W]
    cos_t, sin_t = torch.cos(p["turn"])[..., None, None], torch.sin(p["turn"])[..., None, None]
    scale = torch.tan(p["size"])[..., None, None]
    px, py = (cos_t * x + sin_t * y) / scale, (-sin_t * x + cos_t * y) / scale
    px, py = torch.where(front, px, 9.0), torch.where(front, py, 9.0)
    batch = frame.shape[0]
    grid = torch.stack([px, -py], -1).view(batch * 3, height, width, 2)  # bitmap row 0 is y = +1
    shapes = bitmaps.to(device)[p["shape"].reshape(-1)][:, None]
    mask = F.grid_sample(shapes, grid, "bilinear", "zeros", align_corners=False).view(batch, 3, height, width)
    along = px * torch.cos(p["stripe_angle"])[..., None, None] + py * torch.sin(p["stripe_angle"])[..., None, None]
    stripe = 0.5 + 0.5 * torch.sin(
        2 * math.pi * p["stripe_freq"][..., None, None] * along + p["stripe_phase"][..., None, None]
    )
    for o in range(3):
        colour = (
            stripe[:, o, None] * p["colours"][:, o, 0, :, None, None]
            + (1 - stripe[:, o, None]) * p["colours"][:, o, 1, :, None, None]
        )
        frame = frame * (1 - mask[:, o, None]) + colour * mask[:, o, None]
    target = mask if all_objects else mask[:, :1]  # object 0 is the salient one
    frame = F.avg_pool2d(frame.clamp(0, 1), supersample)
    return frame, F.avg_pool2d(target, supersample)


# ---------------------------------------------------------------------------------------------------------------
# Training and scoring


def sphere_bce(logits, target):
    """BCE with logits averaged over the sphere (each pixel weighted by its solid angle)."""
    area = pixel_solid_angle(logits.shape[-2], logits.shape[-1], dtype=logits.dtype, device=logits.device)[:, None]
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * area).sum((-2, -1)).mean() / (area.sum() * logits.shape[-1])


def band_scores(pred, target, band_index, n_bands):
    """Mean sphere-weighted CC per band: ``pred``, ``target`` ``[N, H, W]``, ``band_index [N]`` -> list of floats
    (NaN for a band without scenes). Also returns the per-scene CCs."""
    per_scene = torch.as_tensor(cc(pred, target, sphere=True), dtype=torch.float64)
    means = []
    for b in range(n_bands):
        chosen = per_scene[band_index == b]
        means.append(float(chosen.mean()) if len(chosen) else float("nan"))
    return means, per_scene


def test_set(size, n_test, bitmaps, device, all_objects=False):
    """The fixed test scenes of every band (same for every model and seed): frames, targets, band index.
    ``all_objects``: targets hold every object's coverage (``render``), the salient one first."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    frames, targets, bands = [], [], []
    for b, band in enumerate(TEST_BANDS):
        for start in range(0, n_test, 32):
            params = scene_parameters(min(32, n_test - start), band, generator)
            frame, target = render(params, size, bitmaps, device, all_objects=all_objects)
            frames.append(frame)
            targets.append(target)
            bands.append(torch.full((len(frame),), b))
    return torch.cat(frames), torch.cat(targets), torch.cat(bands)


@torch.no_grad()
def predict(model, frames, autocast):
    """``sigmoid(logits) [N, H, W]`` of ``frames [N, 3, H, W]`` (zero previous map), in eval mode, 32 at a time;
    the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(frames), 32):
        frame = frames[start : start + 32]
        with autocast():
            logits = model(frame, torch.zeros_like(frame[:, :1]))
        preds.append(torch.sigmoid(logits.float())[:, 0])
    model.train(was_training)
    return torch.cat(preds)


def evaluate(model, frames, targets, bands, autocast):
    return band_scores(predict(model, frames, autocast), targets[:, 0], bands, len(TEST_BANDS))[0]


def prediction_shares(pred, masks, band_index, n_bands):
    """Where a prediction goes, per band (mean over the band's scenes): ``pred [N, H, W]``, ``masks [N, 3, H, W]``
    (each object's coverage, the salient one first) -> ``{"salient", "distractors", "rest"}``: the shares of the
    prediction's solid-angle-weighted mass on the salient object, on the distractors (where not salient) and
    elsewhere; ``"salient_first"``: the share of scenes whose mean prediction over the salient object exceeds its mean
    over each distractor."""
    area = pixel_solid_angle(*pred.shape[-2:], dtype=pred.dtype, device=pred.device)[:, None]
    salient = masks[:, 0]
    distractors = (masks[:, 1] + masks[:, 2]).clamp(max=1) * (1 - salient)
    mass = (pred * area).sum((-2, -1))
    on_salient = (pred * salient * area).sum((-2, -1)) / mass
    on_distractors = (pred * distractors * area).sum((-2, -1)) / mass
    inside = (pred[:, None] * masks * area).sum((-2, -1)) / (masks * area).sum((-2, -1))  # [N, 3]
    first = ((inside[:, 0] > inside[:, 1]) & (inside[:, 0] > inside[:, 2])).to(pred.dtype)
    per_scene = {"salient": on_salient, "distractors": on_distractors, "rest": 1 - on_salient - on_distractors}
    per_scene["salient_first"] = first
    return {key: [float(values[band_index == b].mean()) for b in range(n_bands)] for key, values in per_scene.items()}


def rotated_views(centre_lat=50.0, n_lon=12):
    """Rotations for scoring with rotated views (``[V, 3, 3]`` float64): the identity, then for each hemisphere and
    each of ``n_lon`` longitudes the rotation that carries the point ``c = (+-centre_lat, lon)`` (degrees) to the
    panorama's centre (latitude 0, longitude 0) with ``c``'s local north kept as north: its rows are ``c``, east and
    north at ``c``."""
    lon = 2 * math.pi * torch.arange(int(n_lon), dtype=torch.float64).repeat(2) / n_lon
    lat = torch.tensor([centre_lat, -centre_lat], dtype=torch.float64).repeat_interleave(int(n_lon)) * math.pi / 180
    return torch.cat([torch.eye(3, dtype=torch.float64)[None], torch.stack(tangent_frame(lat, lon), -2)])


# rotate_equirect's frame is this script's (sphere_directions) turned half a turn about the polar axis.
HALF_TURN = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))


def rotate_view(panoramas, rotation):
    """``out(p) = in(rotation^T p)`` with ``rotation`` in this script's frame (``sphere_directions``)."""
    return rotate_equirect(panoramas, HALF_TURN @ rotation @ HALF_TURN)


def view_choice(height, width, views, device):
    """``[H, W]`` index of the view each pixel is scored by: the identity where the pixel is nearer the equator than
    to every other view's centre (angles), else the view whose centre is nearest."""
    u = sphere_directions(height, width, device).double()
    distance = [torch.asin(u[..., 2].abs())]
    distance += [torch.acos((u @ view[0].to(device)).clamp(-1, 1)) for view in views[1:]]
    return torch.stack(distance).argmin(0)


@torch.no_grad()
def predict_rotated(model, frames, autocast, views):
    """Saliency ``[N, H, W]`` of ``frames`` by rotated views, a deployment-time method that needs no labels: each frame
    is rotated by each view, predicted, and the prediction rotated back; each pixel takes the prediction of the view
    that brought it nearest an upright equator position (``view_choice``). The model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    height, width = frames.shape[-2:]
    choice = view_choice(height, width, views, frames.device)
    preds = []
    for start in range(0, len(frames), 32):
        frame = frames[start : start + 32]
        fused = torch.zeros(frame.shape[0], height, width, device=frame.device)
        for k, view in enumerate(views):
            rotated = frame if k == 0 else rotate_view(frame, view)
            with autocast():
                logits = model(rotated, torch.zeros_like(rotated[:, :1]))
            pred = torch.sigmoid(logits.float())
            if k:
                pred = rotate_view(pred, view.transpose(0, 1))
            fused = torch.where(choice == k, pred[:, 0], fused)
        preds.append(fused)
    model.train(was_training)
    return torch.cat(preds)


def evaluate_rotated(model, frames, targets, bands, autocast, views):
    """``evaluate`` with ``predict_rotated``: the per-band CCs."""
    return band_scores(predict_rotated(model, frames, autocast, views), targets[:, 0], bands, len(TEST_BANDS))[0]


def rescore(paths, n_test, device, views):
    """Each network written by ``--save-models``, scored on the fixed test set plainly and with rotated views, and
    where its prediction goes (``prediction_shares``)."""
    bitmaps, tests, rows = shape_bitmaps(), {}, []
    for path in paths:
        model, saved = load_trained(path, device)
        size = tuple(saved["size"])
        if size not in tests:
            tests[size] = test_set(size, n_test, bitmaps, device, all_objects=True)
        frames, masks, bands = tests[size]
        pred = predict(model, frames, contextlib.nullcontext)
        plain = band_scores(pred, masks[:, 0], bands, len(TEST_BANDS))[0]
        shares = prediction_shares(pred, masks, bands, len(TEST_BANDS))
        rotated = evaluate_rotated(model, *tests[size], contextlib.nullcontext, views)
        rows.append(dict(path=os.path.basename(path), model=saved["model"], size=list(size), seed=saved["seed"],
                         steps=saved["steps"], cc=plain, cc_rotated_views=rotated, shares=shares))  # fmt: skip
        print(f"{saved['model']} seed {saved['seed']} {size[0]}x{size[1]}: CC by band "
              + " ".join(f"{v:.3f}" for v in plain) + "  with rotated views "
              + " ".join(f"{v:.3f}" for v in rotated), flush=True)  # fmt: skip
        for key, values in shares.items():
            print(f"  {key:>13} by band " + " ".join(f"{v:.3f}" for v in values), flush=True)
    return rows


def train_one(name, size, seed, steps, batch, args, bitmaps, test, device, save_to=None):
    """Train model ``name`` from ``seed`` and score it per band; with ``save_to``, the trained network is written there
    (a plain dict: ``model``, ``size``, ``seed``, ``steps``, ``state_dict``; ``load_trained`` reads it)."""
    torch.manual_seed(seed)
    model = SphericalUNet(size, **MODELS[name]).to(device)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(1000 + seed)
    cuda = device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", torch.bfloat16, enabled=cuda and args.bf16)

    step_times, losses = [], []
    for _ in range(steps):
        frame, target = render(scene_parameters(batch, tuple(args.train_band), generator), size, bitmaps, device)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast():
            logits = model(frame, torch.zeros_like(frame[:, :1]))
        loss = sphere_bce(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
    scores = evaluate(model, *test, autocast) if math.isfinite(losses[-1]) else [float("nan")] * len(TEST_BANDS)
    rotated = None
    if args.rotated_views and math.isfinite(losses[-1]):
        rotated = evaluate_rotated(model, *test, autocast, rotated_views(*args.views))
    if save_to is not None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(dict(model=name, size=list(size), seed=seed, steps=steps, state_dict=state), buffer)
        atomic_write_bytes(save_to, buffer.getvalue())
    warm = step_times[min(5, len(step_times) - 1) :]
    return {
        "model": name,
        "size": list(size),
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "parameters": parameters,
        "cc": scores,
        **({} if rotated is None else {"cc_rotated_views": rotated}),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "step_ms": 1000 * sum(warm) / len(warm),
        "train_s": sum(step_times),
    }


def load_trained(path, device="cpu"):
    """A network written by ``--save-models``: ``(SphericalUNet, its dict)``, loaded with ``weights_only=True``."""
    saved = torch.load(path, map_location=device, weights_only=True)
    model = SphericalUNet(tuple(saved["size"]), **MODELS[saved["model"]]).to(device)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved


def summarise(runs):
    """Mean and spread (sample std over seeds; 0 for one seed) of the per-band CC of each (size, model)."""
    table = {}
    for run in runs:
        table.setdefault(f"{run['size'][0]}x{run['size'][1]}", {}).setdefault(run["model"], []).append(run)
    out = {}
    for size, models in table.items():
        out[size] = {}
        for name, group in models.items():
            values = torch.tensor([r["cc"] for r in group], dtype=torch.float64)
            spread = values.std(0) if len(group) > 1 else torch.zeros(values.shape[1], dtype=torch.float64)
            out[size][name] = {
                "seeds": [r["seed"] for r in group],
                "parameters": group[0]["parameters"],
                "cc_mean": values.mean(0).tolist(),
                "cc_std": spread.tolist(),
                "step_ms": sum(r["step_ms"] for r in group) / len(group),
            }
    return out


SETTING_KEYS = ("steps", "batch", "lr", "n_test", "bf16")


def train_band_of(result):
    """The latitude band a result's runs were trained in; results from before ``--train-band`` used TRAIN_BAND."""
    return tuple(result.get("config", {}).get("train_band", TRAIN_BAND))


def run_setting(result, run):
    """A run's (steps, batch, lr, n_test, bf16): from a merged file's per-size ``settings``, else from its config."""
    height, width = run["size"]
    settings = result.get("settings", {}).get(f"{height}x{width}")
    if settings is not None:
        return tuple(settings[key] for key in SETTING_KEYS)
    config = result.get("config", {})
    return (run["steps"], run["batch"]) + tuple(config.get(key) for key in SETTING_KEYS[2:])


def merge_results(results, names):
    """One result from several runs of the same setting (e.g. a budget-cut run and the run of its missing seeds):
    the runs of all, the summary recomputed. Refused where a (size, model, seed) appears twice or a size was trained
    with other steps, batch, learning rate, test set size or precision, or runs trained in different latitude
    bands."""
    bands = {train_band_of(r) for r in results if isinstance(r, dict)}
    if len(bands) > 1:
        raise ValueError(f"--merge: the runs were trained in different latitude bands {sorted(bands)}")
    merged = {"merged_from": [], "runs": [], "bands_deg": TEST_BANDS}
    settings, seen = {}, set()
    for result, name in zip(results, names):
        if not isinstance(result, dict) or not isinstance(result.get("runs"), list):
            raise ValueError(f"--merge: {name} is not a latitude.json (no 'runs' list)")
        provenance = {key: result.get(key) for key in ("device", "torch", "started_utc", "elapsed_s", "skipped")}
        merged["merged_from"].append(provenance | {"file": name})
        for run in result["runs"]:
            key = (tuple(run["size"]), run["model"], run["seed"])
            if key in seen:
                raise ValueError(f"--merge: {run['model']} {run['size']} seed {run['seed']} appears twice")
            seen.add(key)
            setting = run_setting(result, run)
            if settings.setdefault(key[0], setting) != setting:
                raise ValueError(
                    f"--merge: size {run['size']} was trained with different settings "
                    f"({dict(zip(SETTING_KEYS, settings[key[0]]))} and {dict(zip(SETTING_KEYS, setting))})"
                )
            merged["runs"].append(run)
    merged["train_band_deg"] = next(iter(bands), TRAIN_BAND)
    merged["settings"] = {f"{h}x{w}": dict(zip(SETTING_KEYS, setting)) for (h, w), setting in settings.items()}
    merged["summary"] = summarise(merged["runs"])
    return merged


def plot(result, path):
    """CC against latitude band, one panel per size, mean with a bar of +-1 std per model (PIL; no matplotlib)."""
    from PIL import Image, ImageDraw

    summary = result["summary"]
    panel_w, panel_h, margin = 420, 320, 50
    image = Image.new("RGB", (panel_w * max(1, len(summary)), panel_h + 120), "white")
    draw = ImageDraw.Draw(image)
    palette = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
    ]
    names = sorted({name for models in summary.values() for name in models}, key=list(MODELS).index)
    values = [v for models in summary.values() for m in models.values() for v in m["cc_mean"] if math.isfinite(v)]
    low = min([0.5] + [v - 0.05 for v in values])
    for k, (size, models) in enumerate(summary.items()):
        x0, y0, x1, y1 = k * panel_w + margin, 30, (k + 1) * panel_w - 15, panel_h - 20

        def to_y(v, y0=y0, y1=y1):
            return y1 - (y1 - y0) * (max(low, min(1.0, v)) - low) / (1 - low)

        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 10), f"{size}: CC (sphere) by latitude band", fill="black")
        for tick in range(11):
            value = low + (1 - low) * tick / 10
            y = y1 - (y1 - y0) * tick / 10
            draw.line([x0 - 4, y, x0, y], fill="black")
            draw.text((x0 - 40, y - 6), f"{value:.2f}", fill="black")
        for b, band in enumerate(TEST_BANDS):
            x = x0 + (x1 - x0) * (b + 0.5) / len(TEST_BANDS)
            draw.text((x - 20, y1 + 5), f"{band[0]:.0f}-{band[1]:.0f} deg", fill="black")
        for j, name in enumerate(names):
            if name not in models:
                continue
            colour = palette[j % len(palette)]
            points = []
            for b in range(len(TEST_BANDS)):
                mean, std = models[name]["cc_mean"][b], models[name]["cc_std"][b]
                if not math.isfinite(mean):
                    continue
                x = x0 + (x1 - x0) * (b + 0.5) / len(TEST_BANDS) + (j - len(names) / 2) * 4
                draw.line([x, to_y(mean - std), x, to_y(mean + std)], fill=colour, width=2)
                points.append((x, to_y(mean)))
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
    per_row = max(1, (image.width - margin) // 120)  # legend entries per line that fit the image's width
    for j, name in enumerate(names):
        x, y = margin + 120 * (j % per_row), panel_h + 20 + 25 * (j // per_row)
        draw.rectangle([x, y, x + 12, y + 12], fill=palette[j % len(palette)])
        draw.text((x + 18, y), name, fill="black")
    draw.text((margin, panel_h + 95), "mean over seeds; bars: +-1 std over seeds", fill="black")

    def write(f):
        image.save(f, format="PNG")

    from datasets.data import atomic_write

    atomic_write(path, write)


def parse_size(text):
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 64x128), got {text!r}") from None
    if height % 8 or width % 8 or height < 16 or width < 16:
        raise argparse.ArgumentTypeError(f"size must have H, W >= 16 and divisible by 8, got {text!r}")
    return height, width


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for latitude.json and latitude.png")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(32, 64)])
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=["paper", "planar", "resolved", "sphereconv"]
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--seed-list", type=int, nargs="+", default=None, help="these seeds instead (a run's rest)")
    parser.add_argument("--steps", type=int, nargs="+", default=[600], help="training steps, one value or one per size")
    parser.add_argument("--batch", type=int, nargs="+", default=[32], help="batch size, one value or one per size")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, the same for every model")
    parser.add_argument("--n-test", type=int, default=128, help="test scenes per band")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast on CUDA")
    parser.add_argument(
        "--train-band", type=float, nargs=2, default=list(TRAIN_BAND), metavar=("LO", "HI"),
        help="latitudes (degrees, either hemisphere) of the training scenes' objects (default 0 20); another band "
        "trains where the test bands are: an oracle run, to be labelled as such",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument(
        "--budget-min",
        type=float,
        nargs="+",
        default=None,
        help="minutes per size (one value or one per size): start no run that would end past it",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--save-models", action="store_true", help="write each trained network to DIR/models/HxW_MODEL_seedS.pt"
    )
    parser.add_argument(
        "--rotated-views", action="store_true", help="also score every run with rotated views (cc_rotated_views)"
    )
    parser.add_argument(
        "--views", type=float, nargs=2, default=(50.0, 12), metavar=("LAT", "N_LON"),
        help="rotated views: centres at latitude +-LAT, N_LON longitudes each (default: 50 12)",
    )  # fmt: skip
    parser.add_argument(
        "--rescore", nargs="+", default=None, metavar="MODEL.pt",
        help="networks written by --save-models: score them plainly and with rotated views into DIR/rescore.json, exit",
    )  # fmt: skip
    parser.add_argument("--plot-only", default=None, help="redraw the plot of this latitude.json and exit")
    parser.add_argument(
        "--merge", nargs="+", default=None, help="latitude.json files of one setting: one JSON and plot in --out, exit"
    )
    args = parser.parse_args(argv)
    if not (0 < args.views[0] < 90 and args.views[1] >= 1 and args.views[1] == int(args.views[1])):
        parser.error(f"--views takes a latitude in (0, 90) and a whole number of longitudes >= 1, got {args.views}")
    if args.seed_list is not None and (min(args.seed_list) < 0 or len(set(args.seed_list)) < len(args.seed_list)):
        parser.error("--seed-list takes distinct seeds >= 0")
    for name in ("seeds", "steps", "batch", "n_test"):
        if min(getattr(args, name) if isinstance(getattr(args, name), list) else [getattr(args, name)]) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    low, high = args.train_band
    if not 0 <= low < high <= 90:
        parser.error(f"--train-band must be LO HI with 0 <= LO < HI <= 90 degrees, got {low} {high}")
    for name in ("steps", "batch") + (("budget_min",) if args.budget_min else ()):
        if len(getattr(args, name)) not in (1, len(args.sizes)):
            parser.error(f"--{name.replace('_', '-')} takes one value or one per size ({len(args.sizes)})")
    if args.rescore:
        views = rotated_views(*args.views)
        rows = rescore(args.rescore, args.n_test, torch.device(args.device), views)
        out = dict(device=args.device, torch=torch.__version__, n_test=args.n_test, bands_deg=TEST_BANDS,
                   views=len(views), runs=rows)  # fmt: skip
        atomic_write_bytes(os.path.join(args.out, "rescore.json"), json.dumps(out, indent=1).encode())
        return
    if args.plot_only:
        with open(args.plot_only) as f:
            plot(json.load(f), os.path.join(args.out, "latitude.png"))
        return
    if args.merge:
        results = []
        for path in args.merge:
            try:
                with open(path) as f:
                    results.append(json.load(f))
            except (OSError, ValueError) as error:
                parser.error(f"--merge: cannot read {path} as a latitude.json ({error})")
        try:
            merged = merge_results(results, args.merge)
        except ValueError as error:
            parser.error(str(error))
        atomic_write_bytes(os.path.join(args.out, "latitude.json"), json.dumps(merged, indent=1).encode())
        plot(merged, os.path.join(args.out, "latitude.png"))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True  # the same for every model; TF32 on Ampere and later GPUs
    torch.backends.cudnn.allow_tf32 = True
    bitmaps = shape_bitmaps()
    result = {
        "config": {k: v for k, v in vars(args).items() if k != "plot_only"},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "bands_deg": TEST_BANDS,
        "train_band_deg": tuple(args.train_band),
        "runs": [],
        "skipped": [],
    }
    json_path, png_path = os.path.join(args.out, "latitude.json"), os.path.join(args.out, "latitude.png")
    begin = time.perf_counter()
    for k, size in enumerate(args.sizes):
        steps, batch = args.steps[min(k, len(args.steps) - 1)], args.batch[min(k, len(args.batch) - 1)]
        budget = None if args.budget_min is None else 60 * args.budget_min[min(k, len(args.budget_min) - 1)]
        size_begin, last_duration = time.perf_counter(), {}
        test = test_set(size, args.n_test, bitmaps, device)
        for seed in range(args.seeds) if args.seed_list is None else args.seed_list:
            for name in args.models:
                # Start no run that would end past this size's budget, judged by the model's previous run.
                if budget is not None and time.perf_counter() - size_begin + last_duration.get(name, 0) > budget:
                    result["skipped"].append({"model": name, "size": list(size), "seed": seed})
                    continue
                run_begin = time.perf_counter()
                save_to = None
                if args.save_models:
                    os.makedirs(os.path.join(args.out, "models"), exist_ok=True)
                    save_to = os.path.join(args.out, "models", f"{size[0]}x{size[1]}_{name}_seed{seed}.pt")
                run = train_one(name, size, seed, steps, batch, args, bitmaps, test, device, save_to)
                last_duration[name] = time.perf_counter() - run_begin
                result["runs"].append(run)
                result["summary"] = summarise(result["runs"])
                result["elapsed_s"] = time.perf_counter() - begin
                atomic_write_bytes(json_path, json.dumps(result, indent=1).encode())
                bands = " ".join(f"{v:.3f}" for v in run["cc"])
                print(
                    f"{size[0]}x{size[1]} {name:10s} seed {seed}: CC by band {bands}  "
                    f"({run['step_ms']:.1f} ms/step, {run['parameters']} params)",
                    flush=True,
                )
    result["elapsed_s"] = time.perf_counter() - begin
    atomic_write_bytes(json_path, json.dumps(result, indent=1).encode())
    try:
        plot(result, png_path)
    except ImportError as error:  # no PIL on this machine: redraw later with --plot-only
        print(f"no plot ({error}); run --plot-only {json_path}", file=sys.stderr)


if __name__ == "__main__":
    main()

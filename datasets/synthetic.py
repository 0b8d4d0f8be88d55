"""Synthetic 360-degree saliency videos, written in the layout of the real dataset (see docs/data.md).

Each video shows a few textured spherical caps (stripes or checkers, distinct colours) moving along great
circles over a textured background. Caps are drawn on the sphere, so one near a pole is round on the sphere and
stretched in longitude in the panorama. Gaze points are sampled around the caps, more around the more salient
ones (larger, brighter, faster), plus a uniform spread over the sphere. Everything follows from the seed.

    python -m datasets.synthetic --out data/synthetic --videos 8 --frames 40 --height 128 --width 256 --seed 0
"""

import argparse
import colorsys
import io
import json
import math
import numbers
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.data import atomic_save_npy, atomic_write_bytes, saliency_map
from sconv.functional.common import colatitudes, longitudes

__all__ = [
    "CapObject",
    "sphere_grid",
    "spherical_cap_mask",
    "random_objects",
    "textured_background",
    "render_frame",
    "sample_gaze",
    "generate",
    "ensure_synthetic",
]

_DEG = math.pi / 180
# Speed at which motion doubles an object's saliency (radians per frame).
_SPEED_UNIT = 1 * _DEG


def _unit(colatitude, longitude):
    return np.array(
        [math.sin(colatitude) * math.cos(longitude), math.sin(colatitude) * math.sin(longitude), math.cos(colatitude)]
    )


def sphere_grid(height, width):
    """Unit vectors of the pixel centres, float64 ``[height, width, 3]`` (grid of the operator spec)."""
    theta = colatitudes(height).numpy()[:, None]
    phi = longitudes(width).numpy()[None, :]
    return np.stack(np.broadcast_arrays(np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)), -1)


def spherical_cap_mask(height, width, colatitude, longitude, radius):
    """Pixels whose centre is within great-circle distance ``radius`` of (colatitude, longitude), bool ``[H, W]``."""
    return sphere_grid(height, width) @ _unit(colatitude, longitude) >= math.cos(radius)


@dataclass
class CapObject:
    """A textured spherical cap moving along a great circle.

    ``centre`` (unit vector at frame 0) rotates about ``axis`` (unit, perpendicular to it) by ``speed`` radians per
    frame. The texture lives in the cap's tangent frame (motion direction, axis), turning by ``spin`` per frame.
    """

    centre: np.ndarray
    axis: np.ndarray
    speed: float
    radius: float
    colour: tuple
    brightness: float
    texture: str  # 'stripes' or 'checker'
    period: float  # texture period, radians
    spin: float

    def pose(self, t):
        """Centre and tangent frame at frame ``t``: unit vectors ``(c, e1, e2)``, ``e1, e2`` the texture axes."""
        angle = self.speed * t
        centre = self.centre * math.cos(angle) + np.cross(self.axis, self.centre) * math.sin(angle)
        forward = np.cross(self.axis, centre)
        turn = self.spin * t
        e1 = forward * math.cos(turn) + self.axis * math.sin(turn)
        e2 = -forward * math.sin(turn) + self.axis * math.cos(turn)
        return centre, e1, e2

    @property
    def saliency(self):
        """Relative attention the cap draws: grows with its size, brightness and speed."""
        return self.radius * self.brightness * (1 + self.speed / _SPEED_UNIT)


def _random_unit(rng, size=None):
    v = rng.normal(size=(3,) if size is None else (size, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def random_objects(rng, count):
    """``count`` random caps; the first starts near a pole (colatitude 8-25 degrees from it), the rest anywhere."""
    hue0 = rng.uniform()
    objects = []
    for k in range(count):
        if k == 0:
            colatitude = rng.uniform(8, 25) * _DEG
            if rng.uniform() < 0.5:
                colatitude = math.pi - colatitude
            centre = _unit(colatitude, rng.uniform(0, 2 * math.pi))
        else:
            centre = _random_unit(rng)
        axis = _random_unit(rng)
        axis = axis - centre * (axis @ centre)
        axis /= np.linalg.norm(axis)
        brightness = rng.uniform(0.65, 1.0)
        objects.append(
            CapObject(
                centre=centre,
                axis=axis,
                speed=rng.uniform(0.5, 2.0) * _DEG,
                radius=rng.uniform(8, 20) * _DEG,
                colour=colorsys.hsv_to_rgb((hue0 + k / count) % 1, 0.85, brightness),
                brightness=brightness,
                texture=("stripes", "checker")[int(rng.integers(2))],
                period=rng.uniform(2, 5) * _DEG,
                spin=rng.uniform(-3, 3) * _DEG,
            )
        )
    return objects


def textured_background(grid, rng):
    """Dim, low-contrast background, float ``[H, W, 3]`` in [0, 1]: waves along random directions of the sphere.

    Built from functions of the 3-D unit vector, so it is seamless at the longitude seam and at the poles.
    """
    image = np.broadcast_to(rng.uniform(0.2, 0.4, size=3), grid.shape[:2] + (3,)).copy()
    for frequency, amplitude in ((3, 0.08), (7, 0.05), (20, 0.03)):
        for _ in range(2):
            wave = np.sin(frequency * (grid @ _random_unit(rng)) + rng.uniform(0, 2 * math.pi))
            image += wave[..., None] * rng.uniform(0.3, 1, size=3) * amplitude
    return np.clip(image, 0, 1)


def render_frame(grid, background, objects, t):
    """Frame ``t`` as uint8 ``[H, W, 3]``: the caps painted over ``background`` in order (later ones on top)."""
    image = background.copy()
    for obj in objects:
        centre, e1, e2 = obj.pose(t)
        inside = grid @ centre >= math.cos(obj.radius)
        points = grid[inside]
        a = np.floor(points @ e1 / obj.period)
        pattern = a % 2 if obj.texture == "stripes" else (a + np.floor(points @ e2 / obj.period)) % 2
        image[inside] = np.asarray(obj.colour) * (0.55 + 0.45 * pattern)[:, None]
    return (image * 255 + 0.5).astype(np.uint8)


def sample_gaze(rng, objects, t, viewers, uniform_fraction=0.1):
    """Gaze points of frame ``t``, float64 ``[viewers, 2]`` of (x, y) in [0, 1].

    Each viewer looks at cap k with probability ``(1 - uniform_fraction) * saliency_k / sum(saliency)``, at a
    point inside it (angular offset ``|N(0, radius / 2)|`` capped at the radius, random direction), or with
    probability ``uniform_fraction`` anywhere on the sphere (uniformly).
    """
    weights = np.array([obj.saliency for obj in objects])
    probs = np.append((1 - uniform_fraction) * weights / weights.sum(), uniform_fraction)
    choice = rng.choice(len(probs), size=viewers, p=probs)
    points = _random_unit(rng, viewers)
    offsets = np.abs(rng.normal(size=viewers))
    directions = rng.uniform(0, 2 * math.pi, size=viewers)
    for k, obj in enumerate(objects):
        chosen = choice == k
        centre, e1, e2 = obj.pose(t)
        alpha = np.minimum(offsets[chosen] * obj.radius / 2, obj.radius)[:, None]
        beta = directions[chosen][:, None]
        points[chosen] = np.cos(alpha) * centre + np.sin(alpha) * (np.cos(beta) * e1 + np.sin(beta) * e2)
    x = np.mod(np.arctan2(points[:, 1], points[:, 0]), 2 * math.pi) / (2 * math.pi)
    y = np.arctan2(np.hypot(points[:, 0], points[:, 1]), points[:, 2]) / math.pi
    return np.clip(np.stack([x, y], 1), 0, 1)


def video_scene(seed, videos, video, grid, objects=4):
    """Video ``video`` of a set of ``videos`` generated with ``seed``: its random generator (which goes on to draw the
    gaze points), its background on ``grid`` and its moving objects, drawn as :func:`generate` draws them; the scene
    does not depend on the grid's size, so a copy rendered at another size shows the same scene."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(videos + 1)[video])
    background = textured_background(grid, rng)
    return rng, background, random_objects(rng, objects)


def _count(value, name, minimum):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def generate(out, videos, frames, height, width, seed, objects=4, viewers=24, test_fraction=0.25, gt_factor=2):
    """Write a synthetic dataset into the folder ``out`` (created; must be absent or empty) and return ``out``.

    Writes ``vinfo.pkl`` (plain dicts, lists and tuples of floats; written last), ``<video>/<frame>.jpg`` (frame ids
    ``0000``, ``0001``, ...), ``<video>/<frame>_gt.npy`` (the published-ground-truth layout: float32
    ``[1, gt_factor * height, gt_factor * width]``, :func:`datasets.data.saliency_map` of the frame's gaze points, like
    the original's maps at twice the training size; ``gt_factor=0`` writes none) and ``index.json`` (a seeded
    train/test split, ``test_fraction`` of the videos in test, at least one of each when there are two videos or more).
    Deterministic for a given ``seed``; video ``i`` depends only on ``(seed, i)``.
    """
    videos = _count(videos, "videos", 1)
    frames = _count(frames, "frames", 1)
    height = _count(height, "height", 2)
    width = _count(width, "width", 2)
    seed = _count(seed, "seed", 0)
    objects = _count(objects, "objects", 1)
    viewers = _count(viewers, "viewers", 1)
    gt_factor = _count(gt_factor, "gt_factor", 0)
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    out = os.fspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"out must be an absent or empty folder, {out} is not")
    os.makedirs(out, exist_ok=True)

    grid = sphere_grid(height, width)
    vinfo = {}
    with tqdm(total=videos * frames, desc="synthetic frames", unit="frame") as progress:
        for v in range(videos):
            rng, background, scene = video_scene(seed, videos, v, grid, objects)
            vid = f"video_{v:03d}"
            os.makedirs(os.path.join(out, vid))
            gaze = {}
            for t in range(frames):
                fid = f"{t:04d}"
                buffer = io.BytesIO()
                Image.fromarray(render_frame(grid, background, scene, t)).save(buffer, "JPEG", quality=90)
                atomic_write_bytes(os.path.join(out, vid, fid + ".jpg"), buffer.getvalue())
                gaze[fid] = [(float(x), float(y)) for x, y in sample_gaze(rng, scene, t, viewers)]
                if gt_factor:
                    published = saliency_map(gaze[fid], gt_factor * height, gt_factor * width)[None]
                    atomic_save_npy(os.path.join(out, vid, fid + "_gt.npy"), published)
                progress.update()
            vinfo[vid] = gaze

    ids = sorted(vinfo)
    n_test = min(max(round(videos * test_fraction), 1), videos - 1) if videos > 1 else 0
    split_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(videos + 1)[-1])
    test = sorted(split_rng.choice(ids, size=n_test, replace=False).tolist())
    split = {"train": [v for v in ids if v not in test], "test": test}
    atomic_write_bytes(os.path.join(out, "index.json"), json.dumps(split, indent=1).encode())
    atomic_write_bytes(os.path.join(out, "vinfo.pkl"), pickle.dumps(vinfo, protocol=4))
    return out


def ensure_synthetic(root, videos=8, frames=40, height=128, width=256, seed=0, **options):
    """Generate a synthetic dataset into ``root`` unless ``root/vinfo.pkl`` exists; return ``root``.

    The set is generated into a temporary folder beside ``root`` and renamed into place, so an interrupted or
    concurrent run never leaves a half-written dataset at ``root``. ``options`` go to :func:`generate`.
    """
    root = os.fspath(root)
    if os.path.isfile(os.path.join(root, "vinfo.pkl")):
        return root
    if os.path.exists(root) and (not os.path.isdir(root) or os.listdir(root)):
        raise ValueError(f"{root} exists without vinfo.pkl and is not empty: refusing to generate a dataset there")
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(os.path.abspath(root))}.{uuid.uuid4().hex}.tmp")
    os.mkdir(staging)  # not tempfile.mkdtemp: its 0o700 mode would stick to the dataset after the rename
    try:
        generate(staging, videos, frames, height, width, seed, **options)
        try:
            os.rename(staging, root)  # replaces root only if it is an empty folder
        except OSError:
            if not os.path.isfile(os.path.join(root, "vinfo.pkl")):
                raise
            # Another process finished first: keep its dataset.
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to create (must be absent or empty)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40, help="frames per video")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objects", type=int, default=4, help="moving caps per video")
    parser.add_argument("--viewers", type=int, default=24, help="gaze points per frame")
    args = parser.parse_args()
    generate(args.out, args.videos, args.frames, args.height, args.width, args.seed, args.objects, args.viewers)
    print(f"wrote {args.videos} videos x {args.frames} frames of {args.height}x{args.width} to {args.out}")


if __name__ == "__main__":
    main()

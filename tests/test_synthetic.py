"""The synthetic dataset generator: layout, determinism, drawing on the sphere, gaze sampling, ensure_synthetic."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets import synthetic
from datasets.data import load_vinfo, saliency_map
from datasets.synthetic import (
    CapObject,
    ensure_synthetic,
    generate,
    render_frame,
    sample_gaze,
    sphere_grid,
    spherical_cap_mask,
)

DEG = math.pi / 180
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


def test_layout(tmp_path):
    root = generate(tmp_path / "set", videos=3, frames=4, height=12, width=30, seed=2, viewers=5)
    vinfo = load_vinfo(os.path.join(root, "vinfo.pkl"))  # the restricted reader accepts it: plain data only
    assert sorted(vinfo) == ["video_000", "video_001", "video_002"]
    for vid, frames in vinfo.items():
        assert sorted(frames) == ["0000", "0001", "0002", "0003"]
        assert sorted(os.listdir(os.path.join(root, vid))) == sorted(f + e for f in frames for e in (".jpg", "_gt.npy"))
        for fid, points in frames.items():
            assert len(points) == 5 and all(type(p) is tuple and len(p) == 2 for p in points)
            assert all(type(c) is float and 0 <= c <= 1 for p in points for c in p)
            with Image.open(os.path.join(root, vid, fid + ".jpg")) as img:
                assert img.format == "JPEG" and img.mode == "RGB" and img.size == (30, 12)
            published = np.load(os.path.join(root, vid, fid + "_gt.npy"))  # the published layout, twice the size
            assert published.shape == (1, 24, 60) and published.dtype == np.float32
            np.testing.assert_allclose(published[0], saliency_map(points, 24, 60), rtol=1e-6, atol=0)
    with open(os.path.join(root, "index.json")) as f:
        split = json.load(f)
    assert sorted(split["train"] + split["test"]) == sorted(vinfo) and len(split["test"]) == 1
    with pytest.raises(ValueError, match="empty"):
        generate(root, videos=1, frames=1, height=4, width=8, seed=0)
    with pytest.raises(ValueError, match="frames"):
        generate(tmp_path / "other", videos=1, frames=0, height=4, width=8, seed=0)


def test_deterministic_per_seed(tmp_path):
    kwargs = dict(videos=2, frames=3, height=16, width=32)
    first = _files(generate(tmp_path / "a", seed=7, **kwargs))
    assert first == _files(generate(tmp_path / "b", seed=7, **kwargs))
    other = _files(generate(tmp_path / "c", seed=8, **kwargs))
    assert other.keys() == first.keys() and other["vinfo.pkl"] != first["vinfo.pkl"]
    assert other["video_000/0000.jpg"] != first["video_000/0000.jpg"]
    # Video i depends only on (seed, i): a longer run starts with the same videos.
    longer = load_vinfo(os.path.join(generate(tmp_path / "d", seed=7, **{**kwargs, "videos": 3}), "vinfo.pkl"))
    assert {v: longer[v] for v in ("video_000", "video_001")} == load_vinfo(os.path.join(tmp_path / "a", "vinfo.pkl"))


def test_cap_mask_is_round_on_the_sphere_and_stretched_near_the_pole():
    height, width, radius = 90, 180, 8 * DEG  # 2 degrees per pixel

    def extent(colatitude):
        mask = spherical_cap_mask(height, width, colatitude, math.pi, radius)
        return np.count_nonzero(mask.any(axis=1)), np.count_nonzero(mask.any(axis=0))

    rows, cols = extent(90 * DEG)
    assert abs(rows - 8) <= 1 and abs(cols - 8) <= 1  # round at the equator
    rows, cols = extent(10 * DEG)
    # Half-width in longitude of a cap of radius r at colatitude t: asin(sin r / sin t) (about 53 degrees here).
    half_width = math.asin(math.sin(radius) / math.sin(10 * DEG))
    assert abs(rows - 8) <= 1 and abs(cols - 2 * half_width / (2 * DEG)) <= 2 and cols > 5 * rows


def _cap(colatitude, longitude, speed=0.0, radius=8 * DEG, brightness=1.0):
    centre = np.array(
        [math.sin(colatitude) * math.cos(longitude), math.sin(colatitude) * math.sin(longitude), math.cos(colatitude)]
    )
    axis = np.array([-math.sin(longitude), math.cos(longitude), 0.0])  # moves along its meridian, southwards
    return CapObject(centre, axis, speed, radius, (brightness, 0.0, 0.0), brightness, "checker", 3 * DEG, 0.0)


def test_rendered_cap_near_the_pole_covers_more_columns_than_rows():
    height, width = 90, 180
    grid = sphere_grid(height, width)
    cap = _cap(10 * DEG, 1.0, speed=2 * DEG)
    frame = render_frame(grid, np.zeros((height, width, 3)), [cap], 0)
    lit = frame[..., 0] > 0
    np.testing.assert_array_equal(lit, spherical_cap_mask(height, width, 10 * DEG, 1.0, 8 * DEG))
    assert np.count_nonzero(lit.any(axis=0)) > 5 * np.count_nonzero(lit.any(axis=1))
    assert set(np.unique(frame[lit][:, 0])) == {140, 255}  # two-tone checker texture
    # Frame 20: the cap moved 40 degrees south along its meridian and is rounder.
    moved = render_frame(grid, np.zeros((height, width, 3)), [cap], 20)[..., 0] > 0
    np.testing.assert_array_equal(moved, spherical_cap_mask(height, width, 50 * DEG, 1.0, 8 * DEG))


def test_gaze_follows_saliency():
    rng = np.random.default_rng(0)
    caps = [_cap(60 * DEG, 0.5, radius=15 * DEG), _cap(120 * DEG, 3.5, radius=8 * DEG, brightness=0.7)]
    n = 20000
    points = sample_gaze(rng, caps, 0, n, uniform_fraction=0.1)
    assert points.shape == (n, 2) and points.min() >= 0 and points.max() <= 1
    theta, phi = points[:, 1] * math.pi, points[:, 0] * 2 * math.pi
    units = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1)
    weights = np.array([c.saliency for c in caps])
    assert weights[0] > 2 * weights[1]
    for k, cap in enumerate(caps):
        inside = np.mean(units @ cap.centre >= math.cos(cap.radius) - 1e-9)
        area = (1 - math.cos(cap.radius)) / 2  # fraction of the sphere
        expected = 0.9 * weights[k] / weights.sum() + 0.1 * area
        assert abs(inside - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    # Inside a cap the offsets are |N(0, r/2)| capped at r: the median offset is r/2 * 0.674.
    near = units[units @ caps[0].centre >= math.cos(caps[0].radius)]
    median = np.median(np.arccos(np.clip(near @ caps[0].centre, -1, 1)))
    assert abs(median - 0.674 * caps[0].radius / 2) < 0.05 * caps[0].radius


def test_ensure_synthetic(tmp_path, monkeypatch):
    root = tmp_path / "data" / "synthetic"
    assert ensure_synthetic(root, videos=2, frames=2, height=8, width=16) == os.fspath(root)
    assert os.path.isfile(root / "vinfo.pkl") and sorted(os.listdir(tmp_path / "data")) == ["synthetic"]
    assert oct(os.stat(root).st_mode & 0o777) == oct(0o777 & ~_umask())

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated an existing dataset")

    monkeypatch.setattr(synthetic, "generate", must_not_run)
    ensure_synthetic(root, videos=5)
    # A failed generation leaves nothing behind, and a non-empty folder without vinfo.pkl is refused.
    with pytest.raises(AssertionError):
        ensure_synthetic(tmp_path / "fresh")
    assert sorted(os.listdir(tmp_path)) == ["data"]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        ensure_synthetic(tmp_path / "junk")
    monkeypatch.undo()
    (tmp_path / "empty").mkdir()
    ensure_synthetic(tmp_path / "empty", videos=1, frames=1, height=4, width=8)
    assert os.path.isfile(tmp_path / "empty" / "vinfo.pkl")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "datasets.synthetic", "--out", str(out), "--videos", "2", "--frames", "3"]
    cmd += ["--height", "8", "--width", "16", "--seed", "4"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert _files(out) == _files(generate(tmp_path / "api", videos=2, frames=3, height=8, width=16, seed=4))

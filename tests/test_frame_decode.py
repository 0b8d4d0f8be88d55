"""Frame decoding: JPEGs at reduced DCT scale (draft) against the full decode, other formats exact, the frame cache."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from datasets.data import VRVideo, decode_frame
from datasets.synthetic import generate

HEIGHT, WIDTH = 32, 64  # training size of these tests


def _camera_like(height, width, seed=0):
    """uint8 ``[H, W, 3]``: smooth colour gradients, a sharp-edged checker and film grain (what JPEG struggles with)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.stack([120 + 80 * np.sin(6 * cols), 100 + 90 * rows, 160 - 60 * np.cos(9 * rows * cols)], -1)
    checker = ((np.arange(height)[:, None] // 37 + np.arange(width)[None, :] // 53) % 2).astype(np.float64)
    image += 50 * checker[..., None] + rng.normal(0, 4, size=(height, width, 1))
    return np.clip(image, 0, 255).astype(np.uint8)


def _reference(image):
    """The loader's former path written out: full image, bilinear resize to the training size, uint8."""
    return np.asarray(image.convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR))


@pytest.mark.parametrize(
    "size, drafted, edge_limit",
    [
        ((2000, 1000), (250, 125), 2),  # sides multiples of 8, as 1920 x 960 and 3840 x 1920
        ((2005, 1003), (251, 126), 4),  # a partial last DCT block: its row and column may differ by up to 4
    ],
)
def test_draft_decodes_at_reduced_scale_within_two_levels_of_exact(tmp_path, monkeypatch, size, drafted, edge_limit):
    path = str(tmp_path / "frame.jpg")
    Image.fromarray(_camera_like(size[1], size[0])).save(path, "JPEG", quality=90)
    drafted_sizes = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original_draft(self, mode, size)
        drafted_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    exact = decode_frame(path, HEIGHT, WIDTH, "exact")
    assert drafted_sizes == []
    draft = decode_frame(path, HEIGHT, WIDTH, "draft")
    # At least twice the training size (128 x 64): DCT scale 1/8.
    assert drafted_sizes == [drafted]
    with Image.open(path) as img:
        np.testing.assert_array_equal(exact, _reference(img))
    assert draft.shape == exact.shape == (HEIGHT, WIDTH, 3) and draft.dtype == np.uint8
    diff = np.abs(draft.astype(np.int16) - exact)
    # As docs/data.md states: at most 2 levels (edge_limit on the last row and column), 0.5 on average.
    assert diff[:-1, :-1].max() <= 2 and diff.max() <= edge_limit and diff.mean() <= 0.5, (diff.max(), diff.mean())


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "PNG16", "JPEG-L"])
def test_other_formats_decode_exactly(tmp_path, fmt):
    pixels = _camera_like(200, 400, seed=1)
    path = str(tmp_path / "frame")
    if fmt == "PNG16":  # 16-bit grey, scaled from [0, 65535]
        grey = pixels[..., 0].astype(np.uint16) * 257 + 100
        image = Image.fromarray(grey)
        image.save(path, "PNG")
        expected = _reference(Image.fromarray(np.rint(grey * (255 / 65535)).astype(np.uint8)))
    elif fmt == "JPEG-L":  # grey JPEG: draft at reduced scale too, compared below within tolerance
        Image.fromarray(pixels[..., 1]).save(path, "JPEG", quality=95)
        with Image.open(path) as img:
            expected = _reference(img)
    else:
        Image.fromarray(pixels).save(path, fmt)
        expected = _reference(Image.fromarray(pixels))
    exact = decode_frame(path, HEIGHT, WIDTH, "exact")
    draft = decode_frame(path, HEIGHT, WIDTH, "draft")
    np.testing.assert_array_equal(exact, expected)
    if fmt == "JPEG-L":
        assert np.abs(draft.astype(np.int16) - exact).max() <= 2
    else:
        np.testing.assert_array_equal(draft, expected)


def test_decode_argument_is_checked(tmp_path):
    with pytest.raises(ValueError, match="decode must be 'draft' or 'exact'"):
        decode_frame(str(tmp_path / "x.jpg"), HEIGHT, WIDTH, "fast")
    with pytest.raises(ValueError, match="frame_decode must be 'draft'.*or 'exact'"):
        VRVideo(tmp_path, HEIGHT, WIDTH, 1, frame_decode="fast")


def test_loader_frames_and_cache(tmp_path):
    root = generate(tmp_path / "set", videos=1, frames=2, height=HEIGHT, width=WIDTH, seed=3, gt_factor=0)
    jpg = os.path.join(root, "video_000", "0001.jpg")
    Image.fromarray(_camera_like(512, 1024, seed=2)).save(jpg, "JPEG", quality=90)
    before = sorted(os.listdir(os.path.join(root, "video_000")))
    cache = str(tmp_path / "cache")
    exact = VRVideo(root, HEIGHT, WIDTH, 1, index_file=None, frame_decode="exact").frame("video_000", "0001")
    with Image.open(jpg) as img:
        torch.testing.assert_close(exact, torch.from_numpy(_reference(img) / 255).float().permute(2, 0, 1))
    drafted = torch.from_numpy(decode_frame(jpg, HEIGHT, WIDTH, "draft") / 255).float().permute(2, 0, 1)
    built = VRVideo(root, HEIGHT, WIDTH, 1, index_file=None, cache_dir=cache).frame("video_000", "0001")
    torch.testing.assert_close(built, drafted, rtol=0, atol=0)
    cached_files = [os.path.join(d, f) for d, _, names in os.walk(os.path.join(cache, "frames")) for f in names]
    assert len(cached_files) == 1 and cached_files[0].endswith(".npy")
    # Read back from the cache: the same frame; a damaged cache file is rebuilt, not trusted.
    reader = VRVideo(root, HEIGHT, WIDTH, 1, index_file=None, cache_dir=cache)
    torch.testing.assert_close(reader.frame("video_000", "0001"), drafted, rtol=0, atol=0)
    with open(cached_files[0], "wb") as f:
        f.write(b"not an array")
    torch.testing.assert_close(reader.frame("video_000", "0001"), drafted, rtol=0, atol=0)
    assert np.load(cached_files[0]).shape == (HEIGHT, WIDTH, 3)
    # A frame replaced on disk is decoded again (its size and time are in the key), never read stale.
    Image.fromarray(255 - _camera_like(512, 1024, seed=2)).save(jpg, "JPEG", quality=90)
    os.utime(jpg, ns=(1, 1))
    fresh = torch.from_numpy(decode_frame(jpg, HEIGHT, WIDTH, "draft") / 255).float().permute(2, 0, 1)
    torch.testing.assert_close(reader.frame("video_000", "0001"), fresh, rtol=0, atol=0)
    assert sorted(os.listdir(os.path.join(root, "video_000"))) == before  # nothing written into the dataset


def test_bench_loader_quick(tmp_path):
    from benchmarks import bench_loader

    bench_loader.main(["--out", str(tmp_path), "--quick", "--workers", "0"])
    with open(tmp_path / "bench_loader.json") as f:
        result = json.load(f)
    size = result["sizes"]["1920x960"]
    assert size["draft_vs_exact"]["max_abs"] <= 2
    for key in ("per_worker_decode_fps", "per_worker_item_fps"):
        assert set(size[key]) == {"exact", "draft", "cached"}
        assert all(np.isfinite(v) and v > 0 for v in size[key].values())
    assert all(np.isfinite(v["0"]) and v["0"] > 0 for v in size["loader_fps"].values())


def test_build_frame_cache_fills_the_cache_that_training_reads(tmp_path):
    """tools/build_frame_cache.py with the training flags: every frame of both splits cached (and equal to a fresh
    decode), a second run decodes nothing, the dataset folder is left as it was, --gt-cache none is refused."""
    import opts
    from datasets.synthetic import ensure_synthetic
    from engine.common import load_datasets
    from tools import build_frame_cache

    data = Path(ensure_synthetic(tmp_path / "data", videos=3, frames=6, height=16, width=32, seed=0))
    before = sorted((p.relative_to(data), p.stat().st_mtime_ns) for p in data.rglob("*"))
    argv = ["--data-dir", str(data), "--exp-dir", str(tmp_path / "exp"), "-expID", "run", "--frame-h", "16",
            "--frame-w", "32", "--num-workers", "0"]  # fmt: skip
    decoded, reused = build_frame_cache.main(argv)
    splits = load_datasets(opts.parse(argv), 0, 1, VRVideo)
    frames = [key for split in splits for key in dict.fromkeys(split.items)]
    assert (decoded, reused) == (len(frames), 0) and len(frames) == 18
    uncached = VRVideo(str(data), 16, 32, 2, train=True, index_file=str(data / "index.json"))
    for split in splits:
        for vid, fid in dict.fromkeys(split.items):
            assert split.frame_cached(vid, fid)
            torch.testing.assert_close(split.frame(vid, fid), uncached.frame(vid, fid), rtol=0, atol=0)
    assert build_frame_cache.main(argv) == (0, len(frames))
    assert sorted((p.relative_to(data), p.stat().st_mtime_ns) for p in data.rglob("*")) == before
    with pytest.raises(SystemExit, match="--gt-cache none"):
        build_frame_cache.main(argv + ["--gt-cache", "none"])


def test_bench_train_frames_full_size_copy_shows_the_same_scenes(tmp_path):
    from benchmarks import bench_train_frames as bench

    small = generate(str(tmp_path / "small"), 2, 2, 32, 64, 5, gt_factor=0)
    full = str(tmp_path / "full")
    shutil.copytree(small, full)
    written = bench.write_full_size_video(full, 1, 2, 5, 2, 4.0, (120, 240))
    assert written == sum(os.path.getsize(os.path.join(full, "video_001", f"{t:04d}.jpg")) for t in range(2))
    with Image.open(os.path.join(full, "video_001", "0001.jpg")) as image:
        assert image.size == (bench.FULL_W, bench.FULL_H)

    def levels(root, video, frame):
        return decode_frame(os.path.join(root, video, frame), 32, 64, "exact").astype(np.float64)

    same = np.abs(levels(full, "video_001", "0001.jpg") - levels(small, "video_001", "0001.jpg")).mean()
    other = np.abs(levels(full, "video_001", "0001.jpg") - levels(small, "video_000", "0001.jpg")).mean()
    assert same < 12 and other > 3 * same

"""Ground-truth maps, the restricted vinfo.pkl reader and the VRVideo / VRVideoLSTM loaders."""

import math
import os
import pickle
import random
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import data
from datasets.data import VRVideo, VRVideoLSTM, center_prior, fixation_map, gaze_heatmap, load_vinfo
from datasets.synthetic import generate

# --- references --------------------------------------------------------------------------------------------------


def _unit(theta, phi):
    return (math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta))


def _great_circle(u, v):
    cross = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
    return math.atan2(math.sqrt(sum(c * c for c in cross)), sum(a * b for a, b in zip(u, v)))


def _direct_heatmap(points, height, width, sigma):
    """Slow float64 evaluation: loop over points and pixels, distance in the atan2(|u x v|, u . v) form."""
    out = np.zeros((height, width))
    for x, y in points:
        g = _unit(y * math.pi, x * 2 * math.pi)
        for i in range(height):
            for j in range(width):
                p = _unit((i + 0.5) * math.pi / height, (j + 0.5) * 2 * math.pi / width)
                out[i, j] += math.exp(-(_great_circle(p, g) ** 2) / (2 * sigma**2))
    return out / len(points)


def _vectorised_reference(points, height, width, sigma):
    """Per point, vectorised over pixels with explicit unit vectors and a cross product."""
    theta = (np.arange(height) + 0.5) * np.pi / height
    phi = (np.arange(width) + 0.5) * 2 * np.pi / width
    t, p = np.meshgrid(theta, phi, indexing="ij")
    pix = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)
    out = np.zeros((height, width))
    for x, y in points:
        g = np.array(_unit(y * math.pi, x * 2 * math.pi))
        d = np.arctan2(np.linalg.norm(np.cross(pix, g), axis=-1), pix @ g)
        out += np.exp(-(d**2) / (2 * sigma**2))
    return out / len(points)


# --- gaze_heatmap, fixation_map, center_prior --------------------------------------------------------------------

POLE_AND_SEAM_POINTS = [
    (0.3, 0.0),  # north pole
    (0.71, 1.0),  # south pole
    (0.0, 0.5),  # on the seam
    (1.0, 0.31),  # on the seam, from the other side
    (0.999, 0.45),  # next to the seam
    (0.5, 0.02),
    (0.12, 0.66),
]


@pytest.mark.parametrize("height, width, sigma", [(9, 14, math.pi / 20), (12, 24, 0.4)])
def test_gaze_heatmap_matches_direct_evaluation(height, width, sigma):
    result = gaze_heatmap(POLE_AND_SEAM_POINTS, height, width, sigma)
    assert result.dtype == np.float32 and result.shape == (height, width)
    expected = _direct_heatmap(POLE_AND_SEAM_POINTS, height, width, sigma)
    assert np.abs(result - expected).max() < 1e-6


def test_gaze_heatmap_single_points_pole_and_seam():
    north = gaze_heatmap([(0.37, 0.0)], 10, 20, sigma=1.0)
    # Every longitude is equally far from the pole: rows are constant and fall off with colatitude.
    assert np.ptp(north, axis=1).max() < 1e-7
    assert np.all(np.diff(north[:, 0]) < 0)
    expected_rows = np.exp(-(((np.arange(10) + 0.5) * math.pi / 10) ** 2) / 2)
    np.testing.assert_allclose(north[:, 0], expected_rows, rtol=1e-5, atol=1e-12)
    # x = 0 and x = 1 are the same longitude.
    np.testing.assert_array_equal(gaze_heatmap([(0.0, 0.4)], 10, 20), gaze_heatmap([(1.0, 0.4)], 10, 20))


def test_gaze_heatmap_chunked_over_points(monkeypatch):
    rng = np.random.default_rng(0)
    points = rng.uniform(size=(50, 2))
    monkeypatch.setattr(data, "_CHUNK_ELEMENTS", 7 * 16 * 32)  # chunks of 7 points, the last one partial
    result = gaze_heatmap(points, 16, 32, 0.3)
    assert np.abs(result - _vectorised_reference(points, 16, 32, 0.3)).max() < 1e-6


@pytest.mark.parametrize(
    "points, kwargs, error, message",
    [
        ([], {}, ValueError, "empty"),
        ([(0.5, 1.2)], {}, ValueError, r"\[0, 1\]"),
        ([(0.5, float("nan"))], {}, ValueError, r"\[0, 1\]"),
        ([(0.5, 0.5, 0.5)], {}, ValueError, r"\[N, 2\]"),
        ([(0.5, 0.5)], {"sigma": 0.0}, ValueError, "sigma"),
        ([(0.5, 0.5)], {"height": 0}, ValueError, "height"),
        ([(0.5, 0.5)], {"width": 2.5}, TypeError, "width"),
    ],
)
def test_gaze_heatmap_bad_input(points, kwargs, error, message):
    args = {"height": 8, "width": 16, **kwargs}
    with pytest.raises(error, match=message):
        gaze_heatmap(points, **args)


def test_fixation_map_counts():
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.uniform(size=(40, 2)), [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    points = np.concatenate([points, points[:5]])  # duplicates count twice
    counts = fixation_map(points, 7, 12)
    expected = np.zeros((7, 12), dtype=np.int64)
    for x, y in points:
        expected[min(int(y * 7), 6), min(int(x * 12), 11)] += 1
    assert np.issubdtype(counts.dtype, np.integer)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == len(points) and counts[6, 11] >= 1 and counts[0, 0] >= 1
    np.testing.assert_array_equal(fixation_map([], 3, 4), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="points"):
        fixation_map([(-0.1, 0.5)], 3, 4)


def test_center_prior():
    prior = center_prior(9, 18)
    assert prior.dtype == np.float32 and prior.shape == (9, 18) and prior.max() == 1
    assert np.ptp(prior, axis=1).max() == 0  # latitude only
    np.testing.assert_array_equal(prior, prior[::-1])  # symmetric about the equator
    assert np.all(np.diff(prior[:5, 0]) > 0)
    theta = (np.arange(9) + 0.5) * math.pi / 9
    np.testing.assert_allclose(prior[:, 0], np.exp(-((theta - math.pi / 2) ** 2) / (2 * (math.pi / 9) ** 2)), 1e-6)


# --- restricted unpickling ---------------------------------------------------------------------------------------


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evals:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_RunsShell, _Evals])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_hostile_pickle_is_refused_and_not_run(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "vinfo.pkl"
    path.write_bytes(pickle.dumps({"v": {"0000": [(0.5, 0.5)], "0005": payload(marker)}}, protocol=protocol))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*refused"):
        load_vinfo(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        VRVideo(tmp_path, 8, 16, 1)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numeric_numpy_in_vinfo_becomes_plain_python(tmp_path, protocol):
    path = tmp_path / "vinfo.pkl"
    points = np.array([[0.25, 0.5], [0.75, 0.125]])
    readonly = np.array([1, -2, 3], dtype=">i4")
    readonly.flags.writeable = False  # protocol 5 stores a read-only buffer as bytes, a writable one as bytearray
    vinfo = {
        "v": {"0000": points, "0005": [(np.float64(0.5), np.float32(0.25))], "0010": [(np.int64(1), 0)]},
        "w": {"0000": np.asfortranarray(points), "0005": readonly, "0010": np.float32(2.5) * np.ones((2, 0, 3))},
    }
    path.write_bytes(pickle.dumps(vinfo, protocol=protocol))
    loaded = load_vinfo(path)
    assert loaded == {
        "v": {"0000": [[0.25, 0.5], [0.75, 0.125]], "0005": [(0.5, 0.25)], "0010": [(1, 0)]},
        "w": {"0000": [[0.25, 0.5], [0.75, 0.125]], "0005": [1, -2, 3], "0010": [[], []]},
    }
    assert type(loaded["v"]["0005"][0][0]) is float and type(loaded["v"]["0000"]) is list


def test_protocol5_array_with_a_wrong_buffer_is_refused(tmp_path):
    path = tmp_path / "vinfo.pkl"
    raw = np.array([0.25, 0.5]).tobytes()
    good = pickle.dumps({"v": np.array([0.25, 0.5])}, protocol=5)
    buffer = b"\x96" + len(raw).to_bytes(8, "little") + raw  # BYTEARRAY8 of the array's 16 bytes
    assert good.count(buffer) == 1
    # Half the data for the same shape (2,), without framing (FRAME is optional) so the shorter file stays valid.
    body = good[good.index(b"\x95") + 9 :]
    path.write_bytes(b"\x80\x05" + body.replace(buffer, b"\x96" + (8).to_bytes(8, "little") + raw[:8]))
    with pytest.raises(ValueError, match="refused.*does not match its shape and dtype"):
        load_vinfo(path)


def _expanded_count(obj):
    """Objects a reader walking ``obj`` meets, shared references counted each time (a plain recursive walk)."""
    if isinstance(obj, dict):
        return 1 + sum(_expanded_count(k) + _expanded_count(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return 1 + sum(_expanded_count(v) for v in obj)
    return 1


def test_shared_references_nested_deep_fail_fast(tmp_path):
    path = tmp_path / "vinfo.pkl"
    nested = []
    for _ in range(40):
        nested = [nested, nested]  # 2^40 lists once every reference is copied
    payload = pickle.dumps({"v": {"0000": nested}}, protocol=4)
    assert len(payload) < 300
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*refused.*more than 67108864 objects"):
        load_vinfo(path)
    cycle = []
    cycle.append(cycle)
    path.write_bytes(pickle.dumps({"v": cycle}))
    with pytest.raises(ValueError, match="refused.*nesting deeper than 50"):
        load_vinfo(path)


def test_object_budget_counts_shared_references(tmp_path, monkeypatch):
    path = tmp_path / "vinfo.pkl"
    shared = [(0.25, 0.5), (0.75, 0.125)]
    vinfo = {"v": {"0000": shared, "0005": shared}, "w": {"0000": [shared, shared]}}
    path.write_bytes(pickle.dumps(vinfo))
    count = _expanded_count(vinfo)
    monkeypatch.setattr(data, "_MAX_OBJECTS", count)
    assert load_vinfo(path) == vinfo
    monkeypatch.setattr(data, "_MAX_OBJECTS", count - 1)
    with pytest.raises(ValueError, match="refused.*more than"):
        load_vinfo(path)


def test_non_numeric_numpy_and_garbage_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "vinfo.pkl"
    path.write_bytes(pickle.dumps({"v": {"0000": np.array([_RunsShell(marker)], dtype=object)}}))
    with pytest.raises(ValueError, match="refused"):
        load_vinfo(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"v": np.zeros(2, dtype=[("x", "f8"), ("y", "f8")])}))
    with pytest.raises(ValueError, match="refused"):
        load_vinfo(path)
    path.write_bytes(pickle.dumps({"v": {"0000": [(0.5, 0.5)] * 50}})[:40])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a readable pickle"):
        load_vinfo(path)


# --- the loaders on a tiny synthetic set ------------------------------------------------------------------------

VIDEOS = ["video_000", "video_001", "video_002", "video_003"]


@pytest.fixture(scope="module")
def pristine_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "set"
    return generate(root, videos=4, frames=11, height=24, width=48, seed=3, objects=2, viewers=6, gt_factor=0)


@pytest.fixture
def root(pristine_root, tmp_path):
    """A private copy: the tests write caches and break files."""
    return shutil.copytree(pristine_root, tmp_path / "set")


def _original_scale(points, height, width):
    """The map on the original's scale: the direct heatmap times 10 / (pixels in a pi/7 crown at the equator)."""
    theta = (np.arange(height) + 0.5) * np.pi / height
    phi = (np.arange(width) + 0.5) * 2 * np.pi / width
    t, p = np.meshgrid(theta, phi, indexing="ij")
    pix = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)
    centre = pix[height // 2, 0]
    crown = int((np.arctan2(np.linalg.norm(np.cross(pix, centre), axis=-1), pix @ centre) <= math.pi / 7).sum())
    return _vectorised_reference(points, height, width, math.pi / 20) * 10 / crown


def _previous(maps, height, width):
    """A previous-map input by hand: negatives to 0, scaled to the sphere integral of one gaze point's map."""
    area = (np.cos(np.arange(height) * np.pi / height) - np.cos(np.arange(1, height + 1) * np.pi / height)) * (
        2 * np.pi / width
    )
    one = _original_scale([(0.5, 0.5)], height, width)
    maps = np.clip(np.asarray(maps, dtype=np.float64), 0, None)
    return maps * (one * area[:, None]).sum() / (maps * area[:, None]).sum()


def test_items_shapes_and_values(root):
    vinfo = load_vinfo(os.path.join(root, "vinfo.pkl"))
    ds = VRVideo(root, 16, 32, 4, frame_step=5)
    assert ds.videos == VIDEOS
    assert ds.items == [(v, f) for v in VIDEOS for f in ("0000", "0005", "0010")]
    for index in (0, 4):
        frame, prev, target = ds[index]
        vid, fid = ds.items[index]
        assert frame.shape == (3, 16, 32) and prev.shape == target.shape == (1, 16, 32)
        assert frame.dtype == prev.dtype == target.dtype == torch.float32
        assert 0 <= frame.min() and frame.max() <= 1 and frame.std() > 0.01
        with Image.open(os.path.join(root, vid, fid + ".jpg")) as img:
            resized = np.asarray(img.convert("RGB").resize((32, 16), Image.Resampling.BILINEAR)) / 255
        np.testing.assert_allclose(frame.permute(1, 2, 0).numpy(), resized, atol=1e-6)
        assert target.min() >= 0
        np.testing.assert_allclose(target[0].numpy(), _original_scale(vinfo[vid][fid], 16, 32), rtol=1e-5, atol=1e-9)
        counts = ds.fixations(index)
        np.testing.assert_array_equal(counts, fixation_map(vinfo[vid][fid], 16, 32))
        assert counts.shape == (16, 32) and counts.sum() == 6


def test_previous_map_is_the_earlier_frame_or_the_centre_prior(root):
    ds = VRVideo(root, 16, 32, 4, frame_step=5)
    first, second = ds.items.index(("video_002", "0000")), ds.items.index(("video_002", "0005"))
    np.testing.assert_allclose(ds[first][1][0].numpy(), _previous(center_prior(16, 32), 16, 32), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(ds[second][1][0].numpy(), _previous(ds[first][2][0], 16, 32), rtol=1e-5, atol=1e-12)
    assert torch.isfinite(ds[second][2]).all() and not torch.equal(ds[second][1], ds[second][2])


def test_every_frame_by_default_and_the_previous_offset(root):
    ds = VRVideo(root, 8, 16, 4)
    assert ds.items == [(v, f"{i:04d}") for v in VIDEOS for i in range(11)]  # every frame, as the original
    prior = ds[0][1]
    for fid in ("0000", "0004"):  # no frame 5 earlier: the prior
        torch.testing.assert_close(ds[ds.items.index(("video_001", fid))][1], prior, rtol=0, atol=0)
    for number in (5, 9):  # the map of the frame 5 earlier
        got = ds[ds.items.index(("video_001", f"{number:04d}"))][1]
        earlier = ds[ds.items.index(("video_001", f"{number - 5:04d}"))][2]
        np.testing.assert_allclose(got[0].numpy(), _previous(earlier[0], 8, 16), rtol=1e-5, atol=1e-12)
    two = VRVideo(root, 8, 16, 4, prev_offset=2)
    got = two[two.items.index(("video_001", "0007"))][1][0].numpy()
    earlier = two[two.items.index(("video_001", "0005"))][2][0]
    np.testing.assert_allclose(got, _previous(earlier, 8, 16), rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="prev_offset .* multiple of frame_step"):
        VRVideo(root, 8, 16, 4, frame_step=2, prev_offset=5)


def test_split_is_seeded_and_disjoint(root):
    train = VRVideo(root, 8, 16, 3, frame_step=5, rnd_seed=11)
    test = VRVideo(root, 8, 16, 3, frame_step=5, rnd_seed=11, train=False)
    assert set(train.videos) | set(test.videos) == set(VIDEOS) and not set(train.videos) & set(test.videos)
    assert train.videos == sorted(random.Random(11).sample(VIDEOS, k=3))  # the original's rule
    assert VRVideo(root, 8, 16, 3, frame_step=5, rnd_seed=11).items == train.items
    assert {v for v, _ in test.items} == set(test.videos)
    assert len(VRVideo(root, 8, 16, 0, frame_step=5).videos) == 0
    assert len(VRVideo(root, 8, 16, 0, frame_step=5, train=False)) == 12


def test_index_file_split(root):
    index = os.path.join(root, "index.json")
    train = VRVideo(root, 8, 16, None, index_file=index)
    test = VRVideo(root, 8, 16, None, index_file=index, train=False)
    assert len(train.videos) == 3 and len(test.videos) == 1 and set(train.videos) | set(test.videos) == set(VIDEOS)
    custom = os.path.join(root, "custom.json")
    with open(custom, "w") as f:
        f.write('{"train": ["video_003"], "test": ["video_000", "video_002"]}')
    assert VRVideo(root, 8, 16, 2, frame_step=5, index_file=custom).videos == ["video_003"]
    assert VRVideo(root, 8, 16, 2, frame_step=5, index_file=custom, train=False).videos == ["video_000", "video_002"]
    for text in ('{"train": ["nope"], "test": []}', '{"train": ["video_000"], "test": ["video_000"]}', "[1]"):
        with open(custom, "w") as f:
            f.write(text)
        with pytest.raises(ValueError, match=re.escape(custom)):
            VRVideo(root, 8, 16, None, index_file=custom)


def _files_under(folder):
    """Every file and folder under ``folder`` with its mtime, size and mode: any write shows."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            seen[path] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return seen


def test_cache_in_its_own_folder_keyed_by_everything(root, tmp_path):
    vinfo = load_vinfo(os.path.join(root, "vinfo.pkl"))
    cache = str(tmp_path / "cache")
    before = _files_under(root)
    big = VRVideo(root, 16, 32, 4, frame_step=5, cache_dir=cache)
    vid, fid = big.items[1]
    truth = big[1][2]
    path = big._cache_path(vid, fid)
    assert path.startswith(cache + os.sep) and os.path.isfile(path)
    np.testing.assert_array_equal(np.load(path), truth[0].numpy())
    # A tampered cache file of the right size is read back: proof that the cache is used.
    np.save(path, np.full((16, 32), 0.5, dtype=np.float32))
    assert torch.all(VRVideo(root, 16, 32, 4, frame_step=5, cache_dir=cache)[1][2] == 0.5)
    # Another size, or other gaze points, never reads that file.
    small = VRVideo(root, 8, 16, 4, frame_step=5, cache_dir=cache)
    np.testing.assert_allclose(small[1][2][0].numpy(), _original_scale(vinfo[vid][fid], 8, 16), rtol=1e-5, atol=1e-9)
    assert small._cache_path(vid, fid) != path and np.all(np.load(path) == 0.5)
    _edit_vinfo(root, lambda v: v[vid].update({fid: [(0.25, 0.5)]}))
    moved = VRVideo(root, 16, 32, 4, frame_step=5, cache_dir=cache)
    assert moved._cache_path(vid, fid) != path
    np.testing.assert_allclose(moved[1][2][0].numpy(), _original_scale([(0.25, 0.5)], 16, 32), rtol=1e-5, atol=1e-9)
    _edit_vinfo(root, lambda v: v[vid].update({fid: vinfo[vid][fid]}))
    # A corrupt cache file is replaced by a fresh map.
    with open(path, "wb") as f:
        f.write(b"garbage")
    torch.testing.assert_close(VRVideo(root, 16, 32, 4, frame_step=5, cache_dir=cache)[1][2], truth, rtol=0, atol=0)
    # No cache folder: nothing written anywhere; the dataset folder is never a cache.
    torch.testing.assert_close(VRVideo(root, 16, 32, 4, frame_step=5)[1][2], truth, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cache_dir .* inside the dataset"):
        VRVideo(root, 8, 16, 4, cache_dir=os.path.join(root, "video_000", "cache"))
    after = _files_under(root)
    assert set(after) == set(before) and all(after[f][1:] == before[f][1:] for f in before if "vinfo" not in f)
    assert not [f for _, _, files in os.walk(cache) for f in files if f.endswith(".tmp")]


def _build_every_map(root, cache, barrier):
    barrier.wait()  # all builders start together
    ds = VRVideo(root, 8, 16, 4, cache_dir=cache)
    for index in range(len(ds)):
        ds[index]


def test_concurrent_cache_builders(root, tmp_path):
    # Four processes (as DDP ranks or loader workers would) build the same cache at once: every file ends up whole
    # and right, and no temporary file is left.
    import multiprocessing

    cache = str(tmp_path / "cache")
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_build_every_map, args=(root, cache, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 4
    vinfo = load_vinfo(os.path.join(root, "vinfo.pkl"))
    ds = VRVideo(root, 8, 16, 4)
    files = [os.path.relpath(os.path.join(d, f), cache) for d, _, names in os.walk(cache) for f in names]
    maps = [f for f in files if not f.startswith("frames" + os.sep)]
    assert len(maps) == len(ds) and len(files) == 2 * len(ds)  # one map and one decoded frame per item
    assert not [f for f in files if not f.endswith(".npy")]
    for vid, fid in ds.items:
        cached = np.load(ds.__class__(root, 8, 16, 4, cache_dir=cache)._cache_path(vid, fid))
        np.testing.assert_allclose(cached, _original_scale(vinfo[vid][fid], 8, 16), rtol=1e-5, atol=1e-9)


def _max_pool(array, factor):
    h, w = array.shape
    return array.reshape(h // factor, factor, w // factor, factor).max(axis=(1, 3))


def test_published_ground_truth_is_read_and_max_pooled(tmp_path):
    root = generate(tmp_path / "set", videos=2, frames=3, height=8, width=16, seed=5, viewers=4)
    vinfo = load_vinfo(os.path.join(root, "vinfo.pkl"))
    published = np.load(os.path.join(root, "video_001", "0002_gt.npy"))
    assert published.shape == (1, 16, 32) and published.dtype == np.float32  # twice the frames, as the original's
    np.testing.assert_allclose(published[0], _original_scale(vinfo["video_001"]["0002"], 16, 32), rtol=1e-5, atol=1e-9)
    ds = VRVideo(root, 8, 16, 2)
    target = ds[ds.items.index(("video_001", "0002"))][2]
    np.testing.assert_array_equal(target[0].numpy(), _max_pool(published[0], 2))
    # gt_source='gaze' builds the map from the gaze points at the training size instead.
    gaze = VRVideo(root, 8, 16, 2, gt_source="gaze")
    built = gaze[gaze.items.index(("video_001", "0002"))][2][0].numpy()
    np.testing.assert_allclose(built, _original_scale(vinfo["video_001"]["0002"], 8, 16), rtol=1e-5, atol=1e-9)
    # A map of the training size is used as it is; one that does not resample is bad data naming the file.
    path = os.path.join(root, "video_000", "0001_gt.npy")
    np.save(path, np.full((8, 16), 0.25, dtype=np.float32))
    assert torch.all(VRVideo(root, 8, 16, 2)[1][2] == 0.25)
    np.save(path, np.zeros((1, 12, 16), dtype=np.float32))
    with pytest.raises(ValueError, match=re.escape(path) + ": map of size 12x16 cannot be resampled"):
        VRVideo(root, 8, 16, 2)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(VRVideo(root, 8, 16, 2, on_bad_data="skip")) == 5


_READ_ONLY_CHECK = """
import os, sys
from datasets.data import VRVideo, VRVideoLSTM
root, cache = sys.argv[1], sys.argv[2]
try:
    open(os.path.join(root, "probe"), "w")
except OSError:  # PermissionError, or EROFS on a read-only mount
    pass
else:
    sys.exit("this process can write into the dataset: the check would prove nothing")
for source in ("auto", "gaze"):
    for kind in (VRVideo, VRVideoLSTM):
        for train in (True, False):
            ds = kind(root, 8, 16, None, train=train, gt_source=source, cache_dir=cache,
                      index_file=os.path.join(root, "index.json"))
            for index in range(len(ds)):
                ds[index]
print("ok")
"""


def _as_root_on_a_read_only_mount(root, command):
    """``command`` in a private mount namespace where ``root`` is a read-only bind mount (root ignores file
    permissions, not a read-only mount), or None where this machine does not allow it."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        return None
    remount = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", remount, root, *command]


def test_read_only_dataset(tmp_path):
    # The dataset's files and folders lose their write permission and, run as root, the loaders see the dataset
    # through a read-only mount (or run as an unprivileged user), so any write into the dataset would fail; the
    # listing check catches one anyway.
    import sys
    import tempfile

    base = tempfile.mkdtemp(prefix="readonly-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        root = generate(os.path.join(base, "set"), videos=3, frames=6, height=8, width=16, seed=1, viewers=3)
        cache = os.path.join(base, "cache")
        os.mkdir(cache)
        os.chmod(cache, 0o777)
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o444)
            os.chmod(dirpath, 0o555)
        before = _files_under(root)
        command = [sys.executable, "-c", _READ_ONLY_CHECK, root, cache]
        if os.geteuid() == 0:
            mounted = _as_root_on_a_read_only_mount(root, command)
            if mounted is None and shutil.which("setpriv") is None:
                pytest.skip("running as root with neither a mount namespace nor setpriv: root ignores permissions")
            command = mounted or ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=repo, HOME=base, OMP_NUM_THREADS="1")
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
        assert _files_under(root) == before
        assert any(f.endswith(".npy") for _, _, files in os.walk(cache) for f in files)  # the cache went there
    finally:
        for dirpath, _, _ in os.walk(base):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(base)


def test_lstm_sequences(root):
    single = VRVideo(root, 16, 32, 4, frame_step=5)
    ds = VRVideoLSTM(root, 16, 32, 4, sequence_len=2, frame_step=5)
    assert len(ds) == 4 * 2
    assert ds.items[:2] == [
        (("video_000", "0000"), ("video_000", "0005")),
        (("video_000", "0005"), ("video_000", "0010")),
    ]
    for index in (0, 1):
        frames, prev_maps, targets = ds[index]
        assert frames.shape == (2, 3, 16, 32) and prev_maps.shape == targets.shape == (2, 1, 16, 32)
        np.testing.assert_allclose(prev_maps[1, 0].numpy(), _previous(targets[0, 0], 16, 32), rtol=1e-5, atol=1e-12)
        for t, key in enumerate(ds.items[index]):
            reference = single[single.items.index(key)]
            for got, want in zip((frames[t], prev_maps[t], targets[t]), reference):
                torch.testing.assert_close(got, want, rtol=0, atol=0)
        counts = ds.fixations(index)
        assert counts.shape == (2, 16, 32)
        np.testing.assert_array_equal(counts[1], single.fixations(single.items.index(ds.items[index][1])))
    np.testing.assert_allclose(ds[0][1][0, 0].numpy(), _previous(center_prior(16, 32), 16, 32), rtol=1e-5, atol=1e-12)
    every = VRVideoLSTM(root, 16, 32, 4, sequence_len=6)  # every frame: windows of 6 consecutive frames
    assert len(every) == 4 * 6 and every.items[1] == tuple(("video_000", f"{i:04d}") for i in range(1, 7))
    assert len(VRVideoLSTM(root, 16, 32, 4, sequence_len=3, frame_step=5)) == 4
    assert len(VRVideoLSTM(root, 16, 32, 4, sequence_len=4, frame_step=5)) == 0


def test_dataloader_and_transform(root):
    ds = VRVideo(root, 8, 16, 4, frame_step=5, transform=lambda frame: frame * 2 - 1)
    frames, prev, target = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert frames.shape == (5, 3, 8, 16) and prev.shape == target.shape == (5, 1, 8, 16)
    assert frames.min() < 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"frame_h": 0}, ValueError, "frame_h"),
        ({"frame_step": 1.5}, TypeError, "frame_step"),
        ({"prev_offset": 0}, ValueError, "prev_offset"),
        ({"gt_source": "published"}, ValueError, "gt_source"),
        ({"video_train": 5}, ValueError, "video_train"),
        ({"video_train": "all"}, TypeError, "video_train"),
        ({"on_bad_data": "ignore"}, ValueError, "on_bad_data"),
        ({"gaussian_sigma": -1.0}, ValueError, "gaussian_sigma"),
        ({"transform": 3}, TypeError, "transform"),
    ],
)
def test_bad_arguments(pristine_root, kwargs, error, message):
    args = {"root": pristine_root, "frame_h": 8, "frame_w": 16, "video_train": 2, **kwargs}
    with pytest.raises(error, match=message):
        VRVideo(**args)


def test_missing_vinfo(tmp_path):
    with pytest.raises(FileNotFoundError, match="vinfo.pkl"):
        VRVideo(tmp_path, 8, 16, 1)


# --- bad data ---------------------------------------------------------------------------------------------------


def _edit_vinfo(root, edit):
    path = os.path.join(root, "vinfo.pkl")
    vinfo = load_vinfo(path)
    edit(vinfo)
    with open(path, "wb") as f:
        pickle.dump(vinfo, f)


def _corrupt_jpg(root):
    with open(os.path.join(root, "video_001", "0005.jpg"), "wb") as f:
        f.write(b"this is not a jpeg")
    return os.path.join(root, "video_001", "0005.jpg"), "not a readable image", 1


def _missing_jpg(root):
    os.remove(os.path.join(root, "video_001", "0005.jpg"))
    return os.path.join(root, "video_001", "0005.jpg"), "missing", 1


def _frame_without_gaze(root):
    _edit_vinfo(root, lambda v: v["video_001"].pop("0005"))
    return os.path.join(root, "video_001", "0005.jpg"), "no gaze points", 1


def _empty_gaze(root):
    _edit_vinfo(root, lambda v: v["video_001"].update({"0005": []}))
    return os.path.join(root, "vinfo.pkl"), "'video_001' frame '0005': empty gaze", 1


def _gaze_outside(root):
    _edit_vinfo(root, lambda v: v["video_001"].update({"0005": [(0.5, 0.5), (1.5, 0.2)]}))
    return os.path.join(root, "vinfo.pkl"), r"'video_001' frame '0005': .*\[0, 1\]", 1


def _video_missing(root):
    shutil.rmtree(os.path.join(root, "video_001"))
    return os.path.join(root, "video_001"), "folder is missing", 3


def _video_unlisted(root):
    shutil.copytree(os.path.join(root, "video_001"), os.path.join(root, "video_extra"))
    return os.path.join(root, "video_extra"), "not listed in vinfo.pkl", 0


BAD_DATA = [
    _corrupt_jpg,
    _missing_jpg,
    _frame_without_gaze,
    _empty_gaze,
    _gaze_outside,
    _video_missing,
    _video_unlisted,
]


@pytest.mark.parametrize("breakage", BAD_DATA, ids=lambda f: f.__name__.strip("_"))
def test_bad_data_raises_naming_the_file(root, breakage):
    file, reason, _ = breakage(root)
    with pytest.raises(ValueError, match=re.escape(file) + ": .*" + reason) as info:
        VRVideo(root, 8, 16, 4, frame_step=5)
    assert "1 problem" in str(info.value) and "on_bad_data='skip'" in str(info.value)


@pytest.mark.parametrize("breakage", BAD_DATA, ids=lambda f: f.__name__.strip("_"))
def test_bad_data_skipped_with_one_counted_warning(root, breakage):
    file, reason, lost_items = breakage(root)
    with pytest.warns(UserWarning) as record:
        ds = VRVideo(root, 8, 16, 4, frame_step=5, on_bad_data="skip")
    assert len(record) == 1
    assert re.search(r"skipped 1 videos/frames .*\(first: " + re.escape(file) + ": .*" + reason, str(record[0].message))
    assert len(ds) == 12 - lost_items
    ds[len(ds) - 1]  # the remaining items load


def test_skip_counts_every_problem(root):
    _missing_jpg(root)
    _video_unlisted(root)
    _edit_vinfo(root, lambda v: v["video_003"].update({"0010": []}))
    with pytest.warns(UserWarning, match="skipped 3 videos/frames") as record:
        ds = VRVideo(root, 8, 16, 4, frame_step=5, on_bad_data="skip")
    assert len(record) == 1 and len(ds) == 10
    # The frame after a skipped jpg still gets the skipped frame's map (gaze points are fine) as previous map.
    after = ds[ds.items.index(("video_001", "0010"))][1]
    assert torch.isfinite(after).all() and not torch.equal(after[0], torch.from_numpy(center_prior(8, 16)))


def test_jpg_corrupt_past_its_header_raises_at_load(root):
    path = os.path.join(root, "video_002", "0005.jpg")
    with open(path, "rb") as f:
        jpg = f.read()
    with open(path, "wb") as f:
        f.write(jpg[: len(jpg) * 3 // 4])  # headers intact, entropy-coded data cut short
    ds = VRVideo(root, 8, 16, 4, frame_step=5)  # the header is fine: not detectable cheaply at construction
    with pytest.raises(RuntimeError, match=re.escape(path)):
        ds[ds.items.index(("video_002", "0005"))]


# --- paths escaping the dataset root ------------------------------------------------------------------------------


def _victim(root):
    """A copy of a video outside the root (beside it), as a tree the loader must neither read nor write."""
    victim = os.path.join(os.path.dirname(root), "victim", "video_000")
    shutil.copytree(os.path.join(root, "video_000"), victim)
    return victim


def _files(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_video_id_escaping_the_root_is_refused(root, kind):
    victim = _victim(root)
    before = _files(victim)
    vid = "../victim/video_000" if kind == "relative" else victim
    _edit_vinfo(root, lambda v: v.update({vid: v["video_000"]}))
    with pytest.raises(ValueError, match=re.escape(repr(vid)) + " is not a plain folder name"):
        VRVideo(root, 8, 16, 4)
    with pytest.warns(UserWarning, match="skipped 1 videos/frames .*" + re.escape(repr(vid))):
        ds = VRVideo(root, 8, 16, 4, on_bad_data="skip", frame_step=5)
    assert vid not in ds.videos and len(ds) == 12
    for i in range(len(ds)):
        ds[i]
    assert _files(victim) == before  # no cache written there


def test_symlinked_video_folder_outside_the_root_is_refused(root):
    victim = _victim(root)
    before = _files(victim)
    shutil.rmtree(os.path.join(root, "video_001"))
    os.symlink(victim, os.path.join(root, "video_001"))
    folder = os.path.join(root, "video_001")
    with pytest.raises(ValueError, match=re.escape(folder) + ": .*resolves outside the dataset root"):
        VRVideo(root, 8, 16, 4)
    with pytest.warns(UserWarning, match="skipped 1 videos/frames"):
        ds = VRVideo(root, 8, 16, 4, on_bad_data="skip", frame_step=5)
    assert "video_001" not in ds.videos and len(ds) == 9
    for i in range(len(ds)):
        ds[i]
    assert _files(victim) == before


def test_symlinked_frame_and_cache_outside_the_root(root, tmp_path):
    victim = _victim(root)
    jpg = os.path.join(root, "video_001", "0005.jpg")
    os.remove(jpg)
    os.symlink(os.path.join(victim, "0005.jpg"), jpg)
    with pytest.raises(ValueError, match=re.escape(jpg) + ": the file resolves outside the dataset root"):
        VRVideo(root, 8, 16, 4)
    os.remove(jpg)
    shutil.copy(os.path.join(victim, "0005.jpg"), jpg)
    ds = VRVideo(root, 8, 16, 4, cache_dir=tmp_path / "cache")
    # A cache file linked to a file outside the cache folder: never read from there, replaced by a file of its own.
    outside = os.path.join(victim, "foreign.npy")
    np.save(outside, np.ones((8, 16), dtype=np.float32))
    cache = ds._cache_path("video_001", "0005")
    os.makedirs(os.path.dirname(cache))
    os.symlink(outside, cache)
    target = ds[ds.items.index(("video_001", "0005"))][2][0]
    expected = _original_scale(load_vinfo(os.path.join(root, "vinfo.pkl"))["video_001"]["0005"], 8, 16)
    torch.testing.assert_close(target, torch.from_numpy(expected).float())
    assert not os.path.islink(cache) and np.array_equal(np.load(outside), np.ones((8, 16), dtype=np.float32))
    # A link swapped in after construction is refused when the frame is loaded.
    os.remove(jpg)
    os.symlink(os.path.join(victim, "0005.jpg"), jpg)
    with pytest.raises(RuntimeError, match=re.escape(jpg) + ": the file resolves outside"):
        ds[ds.items.index(("video_001", "0005"))]


# --- frames of any PIL mode -------------------------------------------------------------------------------------

_GRADIENT = np.arange(24 * 48, dtype=np.float64).reshape(24, 48) / (24 * 48 - 1)  # 0 .. 1 over the frame


def _grey16():
    values = np.rint(_GRADIENT * 65535).astype(np.uint16)
    return Image.fromarray(values), "PNG", np.rint(values / 257.0)


def _int32():
    values = np.rint(_GRADIENT * 65535).astype(np.int32)
    return Image.fromarray(values), "TIFF", np.rint(values / 257.0)


def _float01():
    values = _GRADIENT.astype(np.float32)
    return Image.fromarray(values), "TIFF", np.rint(values.astype(np.float64) * 255)


def _grey_alpha():
    grey = np.rint(_GRADIENT * 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey, 255 - grey], -1)), "PNG", grey  # LA: the alpha is dropped


def _palette():
    index = (np.arange(24 * 48) % 3).reshape(24, 48).astype(np.uint8)
    palette = np.array([[200, 10, 30], [0, 120, 250], [90, 90, 90]], dtype=np.uint8)
    img = Image.fromarray(index)
    img.putpalette(palette.flatten().tolist())  # mode P
    return img, "PNG", palette[index]


def _cmyk():
    cyan = np.rint(_GRADIENT * 255).astype(np.uint8)
    zero = np.zeros_like(cyan)
    img = Image.fromarray(np.stack([cyan, zero, zero, zero], -1), mode="CMYK")
    return img, "TIFF", np.stack([255 - cyan, zero + 255, zero + 255], -1)  # no black ink: RGB = 255 - CMY


@pytest.mark.parametrize("frame", [_grey16, _int32, _float01, _grey_alpha, _palette, _cmyk], ids=lambda f: f.__name__)
def test_frames_of_any_mode_become_8bit_rgb_by_their_range(root, frame):
    img, fmt, expected = frame()
    img.save(os.path.join(root, "video_001", "0005.jpg"), format=fmt)  # the loader reads the content, not the name
    with Image.open(os.path.join(root, "video_001", "0005.jpg")) as check:
        assert check.mode == img.mode
    ds = VRVideo(root, 24, 48, 4)  # the frame's own size: resizing is the identity
    got = ds[ds.items.index(("video_001", "0005"))][0]
    expected = torch.from_numpy(np.asarray(expected, dtype=np.float64)).float()
    expected = (expected[None].expand(3, -1, -1) if expected.dim() == 2 else expected.permute(2, 0, 1)) / 255
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_frames_out_of_their_range_or_mode_are_refused_naming_the_file(root, monkeypatch):
    path = os.path.join(root, "video_001", "0005.jpg")
    Image.fromarray((_GRADIENT * 2).astype(np.float32)).save(path, format="TIFF")  # float values up to 2
    ds = VRVideo(root, 24, 48, 4)
    with pytest.raises(RuntimeError, match=re.escape(path) + r".*'F' frame with values in \[0.0, 2.0\]"):
        ds[ds.items.index(("video_001", "0005"))]
    Image.fromarray(np.zeros((24, 48, 4), dtype=np.uint8), mode="CMYK").save(path, format="TIFF")
    monkeypatch.setattr(data, "_CONVERTED_MODES", ("RGB", "L"))
    with pytest.raises(ValueError, match=re.escape(path) + ": image mode 'CMYK' is not converted to RGB"):
        VRVideo(root, 24, 48, 4)


def test_decompression_bomb_frame_is_skipped_naming_the_file(root, monkeypatch):
    path = os.path.join(root, "video_001", "0005.jpg")
    Image.new("RGB", (200, 100)).save(path, format="JPEG")  # 20000 pixels: over twice the limit set below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(ValueError, match=re.escape(path) + ": refused as a decompression bomb"):
        VRVideo(root, 8, 16, 4)
    with pytest.warns(UserWarning, match="skipped 1 videos/frames .*" + re.escape(path) + ": refused as a decomp"):
        ds = VRVideo(root, 8, 16, 4, on_bad_data="skip", frame_step=5)
    assert ("video_001", "0005") not in ds.items and len(ds) == 11

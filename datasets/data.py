"""Saliency datasets of 360-degree videos: ground-truth maps from gaze points and the PyTorch loaders.

Dataset layout (as published with the ECCV 2018 paper)::

    ROOT/vinfo.pkl               dict video id -> dict frame id ('0005') -> list of (x, y) gaze points in [0, 1]^2
    ROOT/<video>/<frame>.jpg     the equirectangular RGB frame
    ROOT/<video>/<frame>_gt.npy  optional: the published ground-truth map of the frame, [1, h, w] float
    ROOT/index.json              optional {"train": [video ids], "test": [video ids]}

``x`` is the longitude fraction and ``y`` the colatitude fraction of a gaze point (``y = 0`` is the north pole,
the top row). Maps live on the grid of ``docs/data.md`` / the operator spec: row ``i`` at colatitude
``(i + 1/2) pi / H``, column ``j`` at longitude ``(j + 1/2) 2 pi / W``.

``vinfo.pkl`` is read with a restricted unpickler: a dataset downloaded from the internet must not be able to run
code. Only dicts, lists, tuples, strings and numbers are admitted (plus numeric numpy scalars and arrays, rebuilt
from their raw bytes without handing the pickle to numpy); anything that imports or calls something else is refused,
and so is a file whose shared references would expand past a budget of objects or depth.
"""

import functools
import hashlib
import json
import math
import numbers
import os
import pickle
import random
import types
import uuid
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sconv.functional.common import colatitudes, longitudes, pixel_solid_angle, positive_int
from sconv.functional.rotate import rotate_equirect, rotate_points

__all__ = [
    "gaze_heatmap",
    "fixation_map",
    "center_prior",
    "map_scale",
    "saliency_map",
    "sphere_mass",
    "normalise_previous",
    "load_vinfo",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_save_npy",
    "decode_frame",
    "VRVideo",
    "VRVideoLSTM",
]

# The original's ground truth: 10 at each gaze pixel, convolved with a Gaussian crown kernel of radius pi/7 whose
# output is divided by the crown's pixel count, averaged over viewers (docs/data.md, "Scale of the maps").
ORIGINAL_GAZE_VALUE = 10.0
ORIGINAL_KERNEL_RAD = math.pi / 7

# Version of the cached maps' formula: part of the cache key, so that a change of formula never reads old maps.
_MAP_VERSION = 2

# Version of the cached frames' decoding: part of their cache key.
_FRAME_VERSION = 1

# A JPEG frame is decoded at the smallest DCT scale (1/2, 1/4, 1/8 of its size) that keeps at least this many times
# the training size in each direction, then resized exactly as a full decode is (docs/data.md, "Decoding frames").
_DRAFT_MARGIN = 2

# Largest [points, H, W] block evaluated at once by gaze_heatmap (float64: 32 MiB per temporary).
_CHUNK_ELEMENTS = 1 << 22


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, sync it and ``os.replace`` it into place.

    Readers (other DataLoader workers, a second training run) and a run killed mid-write see either the old file or
    the complete new one, never a half-written file. Creates the folder; the file gets the usual permissions (0o666
    less the umask). ``write`` streams, so a checkpoint is not copied in memory first.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    """``atomic_write`` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def atomic_save_npy(path, array):
    """``atomic_write`` of ``array`` as a ``.npy`` file (``np.save`` without pickles)."""
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _check_size(height, width):
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return int(height), int(width)


def _check_sigma(sigma, name="sigma"):
    if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
        raise TypeError(f"{name} must be a number (radians), got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{name} must be a positive finite angle in radians, got {sigma}")
    return float(sigma)


def _as_points(points, name="points"):
    """``points`` as a float64 array ``[N, 2]`` of (x, y) in [0, 1]; ``N`` may be 0."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of (x, y) pairs of numbers: {err}") from None
    if array.size == 0:
        return array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name} must have shape [N, 2] (pairs of x, y), got shape {tuple(array.shape)}")
    bad = ~(np.isfinite(array) & (array >= 0) & (array <= 1))
    if bad.any():
        first = tuple(float(v) for v in array[np.nonzero(bad.any(axis=1))[0][0]])
        raise ValueError(
            f"{name} must lie in [0, 1] (x: longitude fraction, y: colatitude fraction); "
            f"{int(bad.any(axis=1).sum())} point(s) do not, e.g. {first}"
        )
    return array


def _gaze_heatmap64(points, height, width, sigma):
    """float64 torch ``[H, W]`` mean spherical Gaussian of the checked ``points`` array (N >= 1)."""
    theta = colatitudes(height)
    phi = longitudes(width)
    sin_theta = torch.sin(theta)
    gaze = torch.from_numpy(points)
    gaze_phi = gaze[:, 0] * (2 * math.pi)
    gaze_theta = gaze[:, 1] * math.pi
    total = torch.zeros(height, width, dtype=torch.float64)
    chunk = max(1, _CHUNK_ELEMENTS // (height * width))
    for start in range(0, gaze.shape[0], chunk):
        g_theta = gaze_theta[start : start + chunk, None]
        g_phi = gaze_phi[start : start + chunk, None]
        # Haversine: hav(d) = hav(dtheta) + sin(theta) sin(theta_g) hav(dphi), separable in rows and columns.
        hav_rows = torch.sin((theta - g_theta) / 2).square()
        row_scale = sin_theta * torch.sin(g_theta)
        hav_cols = torch.sin((phi - g_phi) / 2).square()
        hav = (hav_rows[:, :, None] + row_scale[:, :, None] * hav_cols[:, None, :]).clamp_(0, 1)
        # 2 atan2(sqrt h, sqrt(1 - h)) keeps full precision near d = 0 and d = pi (asin/acos do not).
        dist = 2 * torch.atan2(hav.sqrt(), (1 - hav).sqrt())
        total += torch.exp(dist.square_().mul_(-0.5 / sigma**2)).sum(0)
    return total / gaze.shape[0]


def gaze_heatmap(points, height, width, sigma=math.pi / 20):
    """Ground-truth saliency of gaze points on the sphere, float32 ``[height, width]``.

    ``s(p) = mean_g exp(-d(p, g)^2 / (2 sigma^2))`` with ``d`` the great-circle distance from gaze point ``g`` to
    the pixel centre ``p``; evaluated exactly (no truncation) in float64, chunked over points. Values in (0, 1].

    Args:
        points: ``[N, 2]`` (x, y) in [0, 1]: x the longitude fraction, y the colatitude fraction. N >= 1.
        height, width: grid size.
        sigma: Gaussian width in radians (default pi / 20, as in the paper).
    """
    height, width = _check_size(height, width)
    sigma = _check_sigma(sigma)
    points = _as_points(points)
    if points.shape[0] == 0:
        raise ValueError("points is empty: a gaze heatmap needs at least one (x, y) gaze point")
    return _gaze_heatmap64(points, height, width, sigma).numpy().astype(np.float32)


def fixation_map(points, height, width):
    """Number of gaze points falling in each pixel, int64 ``[height, width]``.

    The pixel of (x, y) is ``(min(int(y * H), H - 1), min(int(x * W), W - 1))``. No points gives all zeros.
    """
    height, width = _check_size(height, width)
    points = _as_points(points)
    rows = np.minimum((points[:, 1] * height).astype(np.int64), height - 1)
    cols = np.minimum((points[:, 0] * width).astype(np.int64), width - 1)
    return np.bincount(rows * width + cols, minlength=height * width).reshape(height, width)


def center_prior(height, width, sigma=math.pi / 9):
    """Equator prior, float32 ``[height, width]`` with maximum 1.

    Viewers of 360-degree video look mostly near the horizon, whatever the longitude, so the prior is a Gaussian
    in latitude only: ``exp(-(theta - pi/2)^2 / (2 sigma^2))`` (sigma = 20 degrees by default), normalised to
    max 1. The datasets scale it with :func:`normalise_previous` to be the "previous saliency map" of the first frames
    of a video.
    """
    height, width = _check_size(height, width)
    sigma = _check_sigma(sigma)
    rows = torch.exp(-((colatitudes(height) - math.pi / 2) ** 2) / (2 * sigma**2))
    rows = rows / rows.max()
    return rows[:, None].expand(height, width).numpy().astype(np.float32)


def crown_pixel_count(height, width, kernel_rad=ORIGINAL_KERNEL_RAD):
    """Pixel centres within ``kernel_rad`` of the pixel centre of row ``height // 2`` (the equator), an int: the
    number the original's crown convolution divides its sums by there."""
    height, width = _check_size(height, width)
    theta = colatitudes(height)
    phi = longitudes(width)
    t0, p0 = theta[height // 2], phi[0]
    hav = (
        torch.sin((theta[:, None] - t0) / 2) ** 2
        + torch.sin(theta[:, None]) * torch.sin(t0) * torch.sin((phi[None, :] - p0) / 2) ** 2
    )
    return int((2 * torch.asin(hav.clamp(0, 1).sqrt()) <= kernel_rad + 1e-12).sum())


@functools.lru_cache(maxsize=64)
def map_scale(height, width):
    """Factor from :func:`gaze_heatmap` (peak 1 per gaze point) to the original's map scale on this grid:
    ``10 / crown_pixel_count(height, width)`` (10 / 265 at 64 x 128, 10 / 1065 at 128 x 256)."""
    return ORIGINAL_GAZE_VALUE / crown_pixel_count(height, width)


def saliency_map(points, height, width, sigma=math.pi / 20):
    """Ground-truth map of gaze points on the original's scale, float32 ``[height, width]``:
    ``map_scale(height, width) * gaze_heatmap(points, height, width, sigma)``."""
    return (gaze_heatmap(points, height, width, sigma) * map_scale(height, width)).astype(np.float32)


def sphere_mass(maps):
    """Integral over the sphere of each map ``[..., H, W]`` (torch): ``sum_i A_i m_i`` with ``A_i`` the pixel's
    solid angle; float64 ``[...]``."""
    area = pixel_solid_angle(maps.shape[-2], maps.shape[-1], device=maps.device)
    return (maps.double() * area[:, None]).sum((-2, -1))


def reference_mass(height, width, sigma=math.pi / 20):
    """The sphere integral of the map of one gaze point on the equator (:func:`saliency_map`): every ground-truth map
    built from gaze points has it, whatever the points (a spherical Gaussian's integral does not depend on where it
    is; up to the grid's discretisation)."""
    return float(sphere_mass(torch.from_numpy(saliency_map([(0.5, 0.5)], height, width, sigma))))


def normalise_previous(maps, mass):
    """A map made ready to be a previous-frame input: negative values set to 0, then scaled to the sphere integral
    ``mass`` (that of a ground-truth map, :func:`reference_mass`). ``maps`` ``[..., H, W]`` (torch, any real values,
    e.g. a model's prediction); a map with nothing positive becomes uniform. Same dtype as ``maps``."""
    if not torch.isfinite(maps).all():
        raise ValueError("maps must be finite to be normalised into a previous map")
    positive = maps.clamp(min=0)
    total = sphere_mass(positive)[..., None, None]
    uniform = torch.ones_like(positive)
    positive = torch.where(total > 0, positive, uniform)
    total = sphere_mass(positive)[..., None, None]
    return (positive.double() * (mass / total)).to(maps.dtype)


# --- restricted unpickling of vinfo.pkl ---------------------------------------------------------------------------

class _Refused(pickle.UnpicklingError):
    """The pickle asks for something outside plain data."""


_NUMERIC_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}


class _NumericDType:
    """Stand-in for ``numpy.dtype`` while unpickling: a numeric dtype name and byte order, nothing else."""

    def __init__(self, name, align=False, copy=False):
        if not isinstance(name, str) or name not in _NUMERIC_DTYPES:
            raise _Refused(f"numpy dtype {name!r} is not a plain numeric dtype")
        self.dtype = np.dtype(name)

    def __setstate__(self, state):
        # numpy's state: (version, byteorder, subarray, names, fields, elsize, alignment, flags); only a plain
        # scalar dtype (no subarray, no fields) is admitted.
        if not (isinstance(state, tuple) and len(state) >= 5 and state[1] in ("<", ">", "|", "=")):
            raise _Refused("unexpected numpy dtype state")
        if state[2:5] != (None, None, None):
            raise _Refused("structured numpy dtypes are not admitted")
        self.dtype = self.dtype.newbyteorder(state[1])


class _NumericArray:
    """Stand-in for a numpy array while unpickling; ``value`` becomes nested lists once its state is set."""

    value = None
    count = 0  # objects in ``value``: its numbers and its nested lists

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _Refused("unexpected numpy array state")
        _, shape, dtype, fortran_order, raw = state
        if not isinstance(dtype, _NumericDType):
            raise _Refused("numpy array of a non-numeric dtype")
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise _Refused("numpy array with an invalid shape")
        if not isinstance(raw, bytes) or len(raw) != math.prod(shape) * dtype.dtype.itemsize:
            raise _Refused("numpy array data does not match its shape and dtype")
        order = "F" if fortran_order else "C"
        self.value = np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=order).tolist()
        self.count = sum(math.prod(shape[:k]) for k in range(len(shape) + 1))


def _frombuffer_array(buffer, dtype, shape, order):
    # Protocol 5 spells an array as numpy's _frombuffer(buffer, dtype, shape, order), the buffer in-band.
    if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
        raise _Refused("malformed protocol-5 numpy array")
    array = _NumericArray()
    array.__setstate__((1, shape, dtype, order == "F", bytes(buffer)))
    return array


_NDARRAY = object()  # what 'numpy.ndarray' resolves to: only a marker for _reconstruct


def _reconstruct_array(cls, shape, typecode):
    if cls is not _NDARRAY:
        raise _Refused("numpy _reconstruct of something other than numpy.ndarray")
    return _NumericArray()


def _numeric_scalar(dtype, data):
    if not isinstance(dtype, _NumericDType) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise _Refused("malformed numpy scalar")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


def _latin1_bytes(text, encoding):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused("_codecs.encode is admitted only as encode(str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args):
    # Protocols 0-2 spell b"" (the data of an empty array) as __builtin__.bytes().
    if args:
        raise _Refused("bytes(...) is admitted only without arguments")
    return b""


_ADMITTED_GLOBALS = {
    ("numpy", "dtype"): _NumericDType,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy.core.multiarray", "scalar"): _numeric_scalar,
    ("numpy._core.multiarray", "scalar"): _numeric_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer_array,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer_array,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except the numeric-numpy stand-ins above: nothing can be imported or run."""

    def find_class(self, module, name):
        admitted = _ADMITTED_GLOBALS.get((module, name))
        if admitted is None:
            raise _Refused(f"it tries to load {module}.{name}")
        if isinstance(admitted, types.FunctionType):
            # A fresh wrapper: a BUILD opcode aimed at it (setattr on a function) cannot alter this module's function.
            return lambda *args: admitted(*args)
        return admitted


# Budget of the copy _plain makes: nesting depth, and objects counted as a reader walking it meets them (a shared
# reference counts each time it is reached). A pickle can share references, so a few hundred bytes can describe 2^40
# objects; 100 videos x 1,500 frames x 30 gaze points make 1.4e7.
_MAX_DEPTH = 50
_MAX_OBJECTS = 2**26


def _plain(obj):
    """``obj`` with array stand-ins replaced by lists; any other type than plain containers, strings and numbers,
    nesting deeper than ``_MAX_DEPTH`` or more than ``_MAX_OBJECTS`` objects (shared references counted each time)
    is refused. Each shared object is copied once (memoised by id), so refusing costs time linear in the file."""
    return _plain_counted(obj, 0, {})[0]


def _plain_counted(obj, depth, memo):
    """``(copy, object count)`` of ``obj``; ``memo``: id of an input container -> its ``(copy, count)``."""
    if depth > _MAX_DEPTH:
        raise _Refused(f"nesting deeper than {_MAX_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj, 1
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _NumericArray):
        if obj.value is None:
            raise _Refused("numpy array without data")
        copy, count = obj.value, obj.count
        leaf = False
    elif type(obj) is dict:
        items = [(_plain_counted(k, depth + 1, memo), _plain_counted(v, depth + 1, memo)) for k, v in obj.items()]
        copy = {k[0]: v[0] for k, v in items}
        count = 1 + sum(k[1] + v[1] for k, v in items)
        leaf = count == 1 + 2 * len(items)
    elif type(obj) in (list, tuple):
        items = [_plain_counted(v, depth + 1, memo) for v in obj]
        copy = type(obj)(v[0] for v in items)
        count = 1 + sum(v[1] for v in items)
        leaf = count == 1 + len(items)
    else:
        raise _Refused(f"it holds an object of type {type(obj).__name__}")
    if count > _MAX_OBJECTS:  # stop early: the sum over a deep chain of shared references grows exponentially
        raise _Refused(f"it holds more than {_MAX_OBJECTS} objects, counting shared references each time")
    if not leaf:  # containers of scalars only (the gaze points, most of the file) are cheap to walk again
        memo[id(obj)] = copy, count
    return copy, count


def load_vinfo(path):
    """Read a ``vinfo.pkl`` safely: plain containers, strings and numbers only (numpy numbers become Python ones).

    Raises ValueError naming ``path`` if the file is not a pickle, or if it would import or call anything
    (such a pickle is refused before any of its code could run).
    """
    try:
        with open(path, "rb") as f:
            obj = _PlainDataUnpickler(f).load()
        return _plain(obj)
    except _Refused as err:
        raise ValueError(
            f"{path}: refused to load: {err}. Only dicts, lists, tuples, strings and numbers (and numeric numpy "
            "scalars/arrays) are admitted; a pickle that imports or calls anything else is never run"
        ) from None
    except OSError:
        raise
    except Exception as err:  # truncated or garbage file: EOFError, ValueError, KeyError, ... from the parser
        raise ValueError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None


# --- the datasets ------------------------------------------------------------------------------------------------


def _read_index(path, listed):
    """Train and test video ids from an index JSON file ``{"train": [...], "test": [...]}``."""
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"index_file {path}: not valid JSON ({err})") from None
    if not (isinstance(index, dict) and all(isinstance(index.get(k), list) for k in ("train", "test"))):
        raise ValueError(f'index_file {path}: expected {{"train": [video ids], "test": [video ids]}}')
    split = {}
    for key in ("train", "test"):
        ids = index[key]
        unknown = [v for v in ids if not isinstance(v, str) or v not in listed]
        if unknown:
            raise ValueError(f"index_file {path}: {key} videos not in vinfo.pkl: {unknown[:5]}")
        split[key] = set(ids)
    both = split["train"] & split["test"]
    if both:
        raise ValueError(f"index_file {path}: videos in both train and test: {sorted(both)[:5]}")
    return split["train"], split["test"]


class _VRVideoBase(Dataset):
    """Scans, validates and splits the dataset; serves frames and maps by (video, frame id)."""

    def __init__(
        self,
        root,
        frame_h,
        frame_w,
        video_train,
        frame_step,
        prev_offset,
        transform,
        train,
        gaussian_sigma,
        gt_source,
        cache_dir,
        rnd_seed,
        index_file,
        on_bad_data,
        frame_decode,
    ):
        self.root = os.fspath(root)
        self.frame_h = positive_int(frame_h, "frame_h")
        self.frame_w = positive_int(frame_w, "frame_w")
        self.frame_step = positive_int(frame_step, "frame_step")
        self.prev_offset = positive_int(prev_offset, "prev_offset")
        if self.prev_offset % self.frame_step:
            raise ValueError(
                f"prev_offset ({prev_offset}) must be a multiple of frame_step ({frame_step}): the previous frame must "
                "be a sampled frame"
            )
        if gt_source not in ("auto", "gaze"):
            raise ValueError(
                f"gt_source must be 'auto' (published <frame>_gt.npy when present) or 'gaze', got {gt_source!r}"
            )
        self.gaussian_sigma = _check_sigma(gaussian_sigma, "gaussian_sigma")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        if on_bad_data not in ("raise", "skip"):
            raise ValueError(f"on_bad_data must be 'raise' or 'skip', got {on_bad_data!r}")
        if frame_decode not in ("draft", "exact"):
            raise ValueError(
                f"frame_decode must be 'draft' (JPEGs decoded at reduced scale) or 'exact' (full decode), "
                f"got {frame_decode!r}"
            )
        self.frame_decode = frame_decode
        self.transform = transform
        self.train = bool(train)
        self.gt_source = gt_source
        self.cache_dir = None if cache_dir is None else os.path.abspath(os.fspath(cache_dir))
        if self.cache_dir is not None and (
            _inside(self.root, self.cache_dir) or os.path.realpath(self.cache_dir) == os.path.realpath(self.root)
        ):
            raise ValueError(f"cache_dir {cache_dir} is inside the dataset {self.root}: the dataset may be read-only")
        self.map_mass = reference_mass(self.frame_h, self.frame_w, self.gaussian_sigma)
        self.prior = normalise_previous(torch.from_numpy(center_prior(self.frame_h, self.frame_w)), self.map_mass)[None]

        vinfo_path = os.path.join(self.root, "vinfo.pkl")
        if not os.path.isfile(vinfo_path):
            raise FileNotFoundError(f"{vinfo_path} not found: root must be a dataset folder (see docs/data.md)")
        vinfo = load_vinfo(vinfo_path)
        if not isinstance(vinfo, dict):
            raise ValueError(f"{vinfo_path}: expected a dict video id -> {{frame id: gaze points}}, got {type(vinfo)}")

        problems = []  # (file, reason): each is one skipped video or frame
        listed = set()
        for vid in vinfo:
            if not isinstance(vid, str):
                problems.append((vinfo_path, f"video id {vid!r} is not a string"))
            elif not _is_plain_name(vid):
                problems.append((vinfo_path, f"video id {vid!r} is not a plain folder name inside the dataset root"))
            else:
                listed.add(vid)
        on_disk = {
            name
            for name in os.listdir(self.root)
            if not name.startswith(".") and os.path.isdir(os.path.join(self.root, name))
        }
        for vid in sorted(on_disk - listed):
            problems.append((os.path.join(self.root, vid), "video folder not listed in vinfo.pkl"))

        if index_file is not None:
            train_ids, test_ids = _read_index(index_file, listed)
        else:
            if not isinstance(video_train, numbers.Integral) or isinstance(video_train, bool):
                raise TypeError(f"video_train must be an int (number of training videos), got {video_train!r}")
            if not 0 <= video_train <= len(listed):
                raise ValueError(f"video_train must be in [0, {len(listed)}] (videos in vinfo.pkl), got {video_train}")
            # As the original: a seeded sample of the sorted video ids; the rest is the test split.
            train_ids = set(random.Random(rnd_seed).sample(sorted(listed), k=int(video_train)))
            test_ids = listed - train_ids
        self._gaze = {}  # (video, frame id) -> checked float64 [N, 2] gaze points of every usable sampled frame
        self._frames = {}  # video -> sorted frame ids that are items (gaze and jpg both fine)
        self._frame_of_number = {}  # (video, int frame number) -> frame id string, for the previous-frame lookup
        self._published = {}  # (video, frame id) -> path of its <frame>_gt.npy (gt_source 'auto', when present)
        for vid in sorted(train_ids if self.train else test_ids):
            self._scan_video(vid, vinfo[vid], vinfo_path, problems)
        self.videos = sorted(self._frames)
        self.skipped = problems  # (file, reason) of each skipped video or frame ('skip' mode)

        if problems:
            file, reason = problems[0]
            if on_bad_data == "raise":
                shown = "\n".join(f"  {f}: {r}" for f, r in problems[:10])
                more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
                raise ValueError(
                    f"{len(problems)} problem(s) with the dataset in {self.root} "
                    f"(pass on_bad_data='skip', --on-bad-data skip, to skip them):\n{shown}{more}"
                )
            warnings.warn(
                f"skipped {len(problems)} videos/frames with bad data in {self.root} (first: {file}: {reason})",
                stacklevel=3,
            )

    def _scan_video(self, vid, frames, vinfo_path, problems):
        folder = os.path.join(self.root, vid)
        if not os.path.isdir(folder):
            problems.append((folder, "video listed in vinfo.pkl but its folder is missing"))
            return
        if not _inside(self.root, folder):
            problems.append((folder, f"video {vid!r}: the folder resolves outside the dataset root (a symlink?)"))
            return
        if not isinstance(frames, dict):
            problems.append((vinfo_path, f"video {vid!r}: expected a dict frame id -> gaze points"))
            return
        jpgs = {name[:-4] for name in os.listdir(folder) if name.endswith(".jpg") and _is_frame_id(name[:-4])}
        good = []
        for fid in sorted(set(frames) | jpgs, key=lambda f: (int(f), f) if _is_frame_id(f) else (-1, str(f))):
            if not _is_frame_id(fid):
                problems.append((vinfo_path, f"video {vid!r}: frame id {fid!r} is not a string of digits"))
                continue
            if int(fid) % self.frame_step:
                continue
            jpg = os.path.join(folder, fid + ".jpg")
            if fid not in frames:
                problems.append((jpg, "frame has no gaze points in vinfo.pkl"))
                continue
            gaze = frames[fid]
            if not isinstance(gaze, (list, tuple)):
                problems.append((vinfo_path, f"video {vid!r} frame {fid!r}: gaze points must be a list of (x, y)"))
                continue
            if len(gaze) == 0:
                problems.append((vinfo_path, f"video {vid!r} frame {fid!r}: empty gaze point list"))
                continue
            try:
                self._gaze[vid, fid] = _as_points(gaze, "gaze points")
            except (TypeError, ValueError) as err:
                problems.append((vinfo_path, f"video {vid!r} frame {fid!r}: {err}"))
                continue
            published = os.path.join(folder, fid + "_gt.npy")
            if self.gt_source == "auto" and os.path.isfile(published):
                reason = self._unusable_map_reason(published) if _inside(self.root, published) else _OUTSIDE
                if reason is not None:
                    problems.append((published, reason))
                    continue
                self._published[vid, fid] = published
            self._frame_of_number[vid, int(fid)] = fid
            reason = _unreadable_image_reason(jpg) if _inside(self.root, jpg) else _OUTSIDE
            if reason is None:
                good.append(fid)
            else:
                problems.append((jpg, reason))
        self._frames[vid] = good

    def _jpg_path(self, vid, fid):
        return os.path.join(self.root, vid, fid + ".jpg")

    def _load_frame(self, vid, fid):
        path = self._jpg_path(vid, fid)
        if not _inside(self.root, path):  # checked at construction too; a link may have been swapped since
            raise RuntimeError(f"{path}: {_OUTSIDE}")
        try:
            cache = self._frame_cache_path(path) if self.cache_dir is not None else None
            pixels = self._cached_frame(cache) if cache is not None else None
            decoded = pixels is None
            if decoded:
                pixels = decode_frame(path, self.frame_h, self.frame_w, self.frame_decode)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise RuntimeError(f"{path}: cannot decode the frame ({type(err).__name__}: {err})") from None
        if decoded and cache is not None and _inside(self.cache_dir, os.path.dirname(cache)):
            atomic_save_npy(cache, pixels)
        frame = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1).contiguous()
        return self.transform(frame) if self.transform is not None else frame

    def frame_cached(self, vid, fid):
        """Whether frame ``(vid, fid)`` is in the frame cache (``cache_dir``), readable, at this size and decoding."""
        if self.cache_dir is None:
            return False
        return self._cached_frame(self._frame_cache_path(self._jpg_path(vid, fid))) is not None

    def _cached_frame(self, path):
        """The frame cached at ``path`` if it is a readable uint8 ``.npy`` of the training size inside ``cache_dir``,
        else None (then it is decoded again and the file replaced)."""
        if not (os.path.isfile(path) and _inside(self.cache_dir, path)):
            return None
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # unreadable or foreign cache file
        return cached if cached.shape == (self.frame_h, self.frame_w, 3) and cached.dtype == np.uint8 else None

    def _frame_cache_path(self, path):
        # The file's identity (resolved path, size, modification time) and the decoding are the key: a frame replaced
        # on disk, another size or the other decoding never reads a stale entry.
        stat = os.stat(path)
        identity = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        key = repr((identity, self.frame_h, self.frame_w, self.frame_decode, _FRAME_VERSION))
        digest = hashlib.sha256(key.encode()).hexdigest()
        return os.path.join(self.cache_dir, "frames", digest[:2], digest[2:] + ".npy")

    def _unusable_map_reason(self, path):
        """None if the published map at ``path`` can be resampled to the training size (header only), else why not."""
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            return f"not a readable .npy file ({type(err).__name__}: {err})"
        shape = array.shape[1:] if array.ndim == 3 and array.shape[0] == 1 else array.shape
        if len(shape) != 2 or array.dtype.kind != "f":
            return f"expected a float map [1, h, w] or [h, w], got {array.dtype} {tuple(array.shape)}"
        if _pool_factor(shape, (self.frame_h, self.frame_w)) is None:
            return (
                f"map of size {shape[0]}x{shape[1]} cannot be resampled to {self.frame_h}x{self.frame_w}: the original "
                "read maps of the training size or an integer multiple of it (max-pooled)"
            )
        return None

    def _published_map(self, path):
        """The published map, max-pooled to the training size as the original did (by 2 for its 2x maps)."""
        array = np.load(path, allow_pickle=False)
        array = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(1, *array.shape[-2:])
        if not torch.isfinite(array).all():
            raise RuntimeError(f"{path}: the published map holds NaN or infinite values")
        factor = _pool_factor(tuple(array.shape[-2:]), (self.frame_h, self.frame_w))
        return torch.nn.functional.max_pool2d(array[None], factor)[0] if factor > 1 else array

    def _cache_path(self, vid, fid):
        # Everything the map depends on is in the key: a change of points, size or sigma never reads a stale map.
        key = hashlib.sha256()
        for part in (
            repr((vid, fid, self.frame_h, self.frame_w, self.gaussian_sigma, _MAP_VERSION)).encode(),
            self._gaze[vid, fid].tobytes(),
        ):
            key.update(part)
        digest = key.hexdigest()
        return os.path.join(self.cache_dir, digest[:2], digest[2:] + ".npy")

    def _gaze_points(self, vid, fid, rotation=None):
        """The frame's gaze points, float64 numpy ``[N, 2]``, rotated exactly by ``rotation`` ``[3, 3]`` if given."""
        gaze = self._gaze[vid, fid]
        return gaze if rotation is None else rotate_points(gaze, rotation).numpy()

    def _saliency_map(self, vid, fid, rotation=None):
        """Ground-truth map of a frame on the original's scale, float32 tensor ``[1, H, W]``: the published
        ``<frame>_gt.npy`` when it is used, else built from the gaze points (cached in ``cache_dir`` if given).

        With ``rotation`` (a ``[3, 3]`` matrix, ``sconv.functional.rotate_equirect``'s convention) the map of the
        rotated panorama: built from the rotated gaze points (not cached), or the published map rotated bilinearly on
        the sphere."""
        published = self._published.get((vid, fid))
        if published is not None:
            saliency = self._published_map(published)
            return saliency if rotation is None else rotate_equirect(saliency[None], rotation.float())[0]
        shape = (self.frame_h, self.frame_w)
        path = self._cache_path(vid, fid) if self.cache_dir is not None and rotation is None else None
        if path is not None and os.path.isfile(path) and _inside(self.cache_dir, path):
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape == shape and cached.dtype == np.float32 and np.isfinite(cached).all():
                    return torch.from_numpy(cached)[None]
            except (OSError, ValueError, EOFError):
                pass  # unreadable or foreign cache file: recompute and replace it
        heat = _gaze_heatmap64(self._gaze_points(vid, fid, rotation), self.frame_h, self.frame_w, self.gaussian_sigma)
        if not heat.max() > 0:
            raise ValueError(
                f"gaussian_sigma={self.gaussian_sigma} is too small for a {self.frame_h}x{self.frame_w} grid: "
                f"the map of {self._jpg_path(vid, fid)} underflows to zero"
            )
        saliency = (heat * map_scale(*shape)).numpy().astype(np.float32)
        # os.replace swaps a symlink at ``path`` itself, so only the folder has to be inside the cache folder.
        if path is not None and _inside(self.cache_dir, os.path.dirname(path)):
            atomic_save_npy(path, saliency)  # concurrent builders: each replaces it whole, same content
        return torch.from_numpy(saliency)[None]

    def previous_key(self, vid, fid):
        """Frame id whose map is the previous map of ``(vid, fid)`` (``prev_offset`` frames earlier, when it has gaze
        points), or None (then the prior is used)."""
        return self._frame_of_number.get((vid, int(fid) - self.prev_offset))

    def normalise_previous(self, maps):
        """``maps [..., H, W]`` (a ground-truth map or a prediction) made into a previous-map input: non-negative with
        the sphere integral of a ground-truth map (:func:`normalise_previous`)."""
        return normalise_previous(maps, self.map_mass)

    def previous_map(self, vid, fid, rotation=None):
        """The ground-truth map of the previous frame (``previous_key``) normalised, or the prior if there is none.
        With ``rotation``, that map of the rotated panorama; the prior is never rotated (it is what a deployed model
        gets, knowing nothing of the video)."""
        prev = self.previous_key(vid, fid)
        if prev is None:
            return self.prior.clone()
        return self.normalise_previous(self._saliency_map(vid, prev, rotation))

    def _sample(self, vid, fid, rotation=None):
        return (
            self.frame(vid, fid, rotation),
            self.previous_map(vid, fid, rotation),
            self._saliency_map(vid, fid, rotation),
        )

    def frames_of(self, vid):
        """The frame ids of video ``vid`` that are items, in order."""
        return list(self._frames[vid])

    def frame(self, vid, fid, rotation=None):
        """The frame ``[3, H, W]`` (after ``transform``), rotated bilinearly on the sphere by ``rotation`` if given."""
        frame = self._load_frame(vid, fid)
        return frame if rotation is None else rotate_equirect(frame[None], rotation.to(frame.dtype))[0]

    def target(self, vid, fid, rotation=None):
        """The ground-truth map ``[1, H, W]`` (original's scale), of the panorama rotated by ``rotation`` if given."""
        return self._saliency_map(vid, fid, rotation)

    def fixations_of(self, vid, fid, rotation=None):
        """Gaze point counts of a frame, int64 numpy ``[H, W]`` (see :func:`fixation_map`), of the gaze points
        rotated by ``rotation`` if given."""
        return fixation_map(self._gaze_points(vid, fid, rotation), self.frame_h, self.frame_w)


def _pool_factor(shape, size):
    """``k`` such that ``shape == k * size`` (k >= 1), else None."""
    factor = shape[0] // size[0]
    return factor if factor >= 1 and shape == (factor * size[0], factor * size[1]) else None


_OUTSIDE = "the file resolves outside the dataset root (a symlink?); refused"


def _is_plain_name(name):
    """Whether ``name`` is one plain path component: not empty, ``.`` or ``..``, no separator, drive or NUL."""
    separators = {os.sep, os.altsep} - {None}
    return (
        name not in ("", ".", "..")
        and "\0" not in name
        and not any(sep in name for sep in separators)
        and not os.path.splitdrive(name)[0]
    )


def _inside(root, path):
    """Whether ``path`` lies inside the folder ``root`` once both have their symlinks resolved.

    The one path-safety rule of the loader: every file it opens or writes under the dataset root is checked with it,
    so neither a crafted video id nor a symlink can make it read or write elsewhere.
    """
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real != real_root and os.path.commonpath([real_root, real]) == real_root


def _is_frame_id(fid):
    return isinstance(fid, str) and fid.isascii() and fid.isdigit()


def _unreadable_image_reason(path):
    """None if ``path`` exists and PIL recognises its header and mode (cheap: no decoding), else why not."""
    if not os.path.isfile(path):
        return "frame listed in vinfo.pkl but the jpg is missing"
    try:
        with Image.open(path) as img:
            if img.mode in _CONVERTED_MODES:
                return None
            return _mode_refused(img.mode)
    except Image.DecompressionBombError as err:  # not an OSError: named here so that on_bad_data='skip' skips it
        return f"refused as a decompression bomb ({err})"
    except (OSError, ValueError, SyntaxError) as err:
        return f"not a readable image ({type(err).__name__}: {err})"


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # PIL opens 16-bit grey PNGs as I;16 (older: I)
_CONVERTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "F")
_CONVERTED_MODES += _SIXTEEN_BIT_MODES


def _mode_refused(mode):
    return f"image mode {mode!r} is not converted to RGB (accepted: {', '.join(_CONVERTED_MODES)})"


def _rgb8(img):
    """``img`` as an 8-bit RGB image, by the real range of its mode; ValueError saying why not.

    8-bit modes go through PIL's ``convert`` (alpha dropped, palettes and colour spaces converted). 16-bit grey
    (and 32-bit integer ``I``, what older PIL made of 16-bit PNGs) is scaled from [0, 65535], float grey ``F``
    from [0, 1]; values outside that range are refused rather than clipped to white or black.
    """
    if img.mode not in _SIXTEEN_BIT_MODES + ("F",):
        if img.mode not in _CONVERTED_MODES:
            raise ValueError(_mode_refused(img.mode))
        return img.convert("RGB")
    values = np.asarray(img, dtype=np.float64)
    top = 1.0 if img.mode == "F" else 65535.0
    if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= top):
        raise ValueError(
            f"mode {img.mode!r} frame with values in [{values.min()}, {values.max()}]: expected values in [0, {top:g}]"
            " (convert it to 8-bit RGB first)"
        )
    return Image.fromarray(np.rint(values * (255 / top)).astype(np.uint8)).convert("RGB")


def decode_frame(path, height, width, decode="draft"):
    """The image file at ``path`` as 8-bit RGB resized to ``width x height`` (PIL bilinear), uint8 numpy ``[H, W, 3]``.

    ``decode='exact'`` decodes the full image, then resizes it. ``decode='draft'`` lets a JPEG decode at reduced scale
    (libjpeg's DCT scaling by 1/2, 1/4 or 1/8, the smallest that keeps at least twice ``width x height``: PIL's
    ``draft``), then resizes the region of the reduced image that covers the full one with the same filter: 2.5x
    (1920 x 960) to 5x (3840 x 1920) faster, within 3 levels of the exact path (docs/data.md, "Decoding frames").
    Other formats (PNG, TIFF, 16-bit) decode exactly either way. Raises what PIL raises for an unreadable file,
    ValueError for a mode that is not converted (see ``_rgb8``).
    """
    if decode not in ("draft", "exact"):
        raise ValueError(f"decode must be 'draft' or 'exact', got {decode!r}")
    with Image.open(path) as img:
        box = None
        if decode == "draft":
            drafted = img.draft("RGB", (_DRAFT_MARGIN * width, _DRAFT_MARGIN * height))  # None: not a JPEG
            box = drafted[1] if drafted is not None else None
        img = _rgb8(img).resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.asarray(img)


_ARGS_DOC = """
    Args:
        root: dataset folder (``vinfo.pkl`` and one folder of ``<frame>.jpg`` per video).
        frame_h, frame_w: size of the frames and maps; frames are resized with PIL (bilinear, antialiased).
        video_train: number of training videos, a seeded random sample (``random.Random(rnd_seed)``) of the
            sorted video ids of ``vinfo.pkl``, as the original code did; the other videos are the test split.
            Ignored (may be None) when ``index_file`` is given.
        frame_step: only frames whose number is a multiple of it are items (default 1: every frame, as the
            original's ``VRVideo``, which lists every jpg).
        prev_offset: the previous map of frame ``n`` is the map of frame ``n - prev_offset`` (the original's
            ``frame_interval``, 5); a multiple of ``frame_step``.
        transform: optional callable applied to the frame tensor ``[3, H, W]`` (e.g. normalisation).
        train: serve the training split (True) or the test split (False).
        gaussian_sigma: width in radians of the spherical Gaussian of each gaze point.
        gt_source: ``'auto'`` (default): a frame's published ``<frame>_gt.npy`` is its ground truth when present
            (max-pooled to the training size, as the original), else the map is built from its gaze points;
            ``'gaze'``: always built from the gaze points.
        cache_dir: folder where maps built from gaze points (``<sha256 of the inputs>.npy``) and frames decoded at
            the training size (``frames/<sha256 of the file and the decoding>.npy``, uint8) are cached, written
            atomically: any number of processes may build them at once; or None (compute them, write nothing).
            Never inside ``root``: nothing is ever written into the dataset, which may be read-only.
        rnd_seed: seed of the train/test split.
        index_file: optional JSON ``{"train": [...], "test": [...]}`` of video ids that defines the split instead.
        on_bad_data: ``'raise'`` (default): a ValueError listing every problem found at construction; ``'skip'``:
            leave out the bad videos/frames with one warning that counts them (listed in ``skipped``).
        frame_decode: ``'draft'`` (default): JPEG frames decoded at reduced scale then resized, within 3 levels of
            ``'exact'``, the full decode then resize (:func:`decode_frame`).

    Checked at construction (cheap, before any training): ``vinfo.pkl`` (restricted unpickler, structure, gaze
    points non-empty and inside [0, 1]), video folders listed but missing or present but unlisted, sampled frames
    without gaze points or without a jpg, jpgs whose header PIL cannot read, and published maps whose header is
    not a float map of a size that resamples to the training size. A jpg that is only found corrupt when decoded
    raises a RuntimeError naming the file when its item is loaded.

    Maps are on the original's scale (docs/data.md): :func:`saliency_map` for gaze points, the published values for
    ``<frame>_gt.npy``. The previous map is the map of the frame ``prev_offset`` earlier when that frame has valid gaze
    points (even if its own jpg was skipped), else the equator prior (:func:`center_prior`); either is passed through
    :func:`normalise_previous` (non-negative, the sphere integral of a ground-truth map built from gaze points), as a
    model's own prediction is when it replaces it at test time.
"""


class VRVideo(_VRVideoBase):
    """Saliency in 360-degree video, one frame per item.

    An item is ``(frame, prev_map, target)``: ``frame`` float32 ``[3, H, W]`` in [0, 1] (before ``transform``),
    ``prev_map`` float32 ``[1, H, W]`` the normalised ground-truth map of the frame ``prev_offset`` earlier (the
    prior for the first frames of a video), ``target`` float32 ``[1, H, W]`` the frame's ground-truth map.

    With ``earlier=True`` an item also carries what a deployed model's previous map is made from, up to
    ``earlier_steps = K`` steps back: ``(..., earlier_frames, start_map, earlier_count)``. ``earlier_frames``
    float32 ``[K, 3, H, W]`` holds the frames ``n * prev_offset`` earlier, ``n = count, ..., 1``, oldest first and
    right-aligned (the first ``K - count`` rows are zeros); ``start_map`` ``[1, H, W]`` is the previous map (as
    above) of the oldest of them; ``earlier_count`` an int64 tensor, the number of frames in the chain: it stops at
    ``K``, at the start of the video, or at a frame that is not an item (then ``start_map`` is that frame's
    ground-truth previous map; with no earlier frame at all, the item's own previous map). Training on the model's
    own previous maps (``train_unet.py --own-previous``, ``--own-previous-steps``) rolls the model over the chain.

    Attributes:
        items: ``(video id, frame id)`` of each item, videos sorted, frames in order.
        videos: the video ids of this split (less any skipped whole video).
    """

    __doc__ += _ARGS_DOC

    def __init__(
        self,
        root,
        frame_h,
        frame_w,
        video_train,
        *,
        frame_step=1,
        prev_offset=5,
        transform=None,
        train=True,
        gaussian_sigma=math.pi / 20,
        gt_source="auto",
        cache_dir=None,
        rnd_seed=367643,
        index_file=None,
        on_bad_data="raise",
        frame_decode="draft",
        earlier=False,
        earlier_steps=1,
    ):
        super().__init__(
            root,
            frame_h,
            frame_w,
            video_train,
            frame_step,
            prev_offset,
            transform,
            train,
            gaussian_sigma,
            gt_source,
            cache_dir,
            rnd_seed,
            index_file,
            on_bad_data,
            frame_decode,
        )
        if not isinstance(earlier, bool):
            raise TypeError(f"earlier must be True or False, got {earlier!r}")
        if isinstance(earlier_steps, bool) or not isinstance(earlier_steps, int) or earlier_steps < 1:
            raise ValueError(f"earlier_steps must be an int >= 1, got {earlier_steps!r}")
        self.earlier = earlier
        self.earlier_steps = earlier_steps
        self.items = [(vid, fid) for vid in self.videos for fid in self._frames[vid]]
        self._is_item = set(self.items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.sample(index)

    def sample(self, index, rotation=None):
        """Item ``index``, of the panorama rotated by ``rotation`` ``[3, 3]`` if given (frame, previous map and target
        alike, and with ``earlier`` the earlier frames and their start map too; ``datasets.augment``)."""
        vid, fid = self.items[index]
        item = self._sample(vid, fid, rotation)
        if not self.earlier:
            return item
        chain = []  # the earlier items, newest first
        while len(chain) < self.earlier_steps:
            prev = self.previous_key(vid, chain[-1] if chain else fid)
            if prev is None or (vid, prev) not in self._is_item:
                break
            chain.append(prev)
        frames = torch.zeros((self.earlier_steps, *item[0].shape), dtype=item[0].dtype)
        for row, prev in enumerate(reversed(chain), start=self.earlier_steps - len(chain)):
            frames[row] = self.frame(vid, prev, rotation)
        start_map = self.previous_map(vid, chain[-1], rotation) if chain else item[1].clone()
        return (*item, frames, start_map, torch.tensor(len(chain)))

    def fixations(self, index):
        """Gaze point counts of item ``index``, int64 numpy ``[H, W]`` (see :func:`fixation_map`)."""
        return fixation_map(self._gaze[self.items[index]], self.frame_h, self.frame_w)


class VRVideoLSTM(_VRVideoBase):
    """Saliency in 360-degree video, sequences of ``sequence_len`` consecutive sampled frames of one video.

    An item is ``(frames, prev_maps, targets)``: float32 ``[T, 3, H, W]``, ``[T, 1, H, W]``, ``[T, 1, H, W]`` for
    ``T = sequence_len`` consecutive sampled frames (``frame_step`` apart; every frame by default, as the original);
    ``prev_maps[t]`` is the normalised map of the frame ``prev_offset`` before frame ``t`` (the prior at the start of
    a video). Every window of T consecutive usable frames of one video is an item (stride 1); a skipped frame breaks
    the run, and a video with fewer than T usable frames gives no item. (The original's windows ran over its flat
    list of all frames, so some crossed from one video into the next.)

    Attributes:
        items: for each item, the tuple of its T ``(video id, frame id)``.
        videos: the video ids of this split (less any skipped whole video).
    """

    __doc__ += _ARGS_DOC.replace("Args:\n", "Args:\n        sequence_len: frames per item, T.\n", 1)

    def __init__(
        self,
        root,
        frame_h,
        frame_w,
        video_train,
        *,
        sequence_len=2,
        frame_step=1,
        prev_offset=5,
        transform=None,
        train=True,
        gaussian_sigma=math.pi / 20,
        gt_source="auto",
        cache_dir=None,
        rnd_seed=367643,
        index_file=None,
        on_bad_data="raise",
        frame_decode="draft",
    ):
        self.sequence_len = positive_int(sequence_len, "sequence_len")
        super().__init__(
            root,
            frame_h,
            frame_w,
            video_train,
            frame_step,
            prev_offset,
            transform,
            train,
            gaussian_sigma,
            gt_source,
            cache_dir,
            rnd_seed,
            index_file,
            on_bad_data,
            frame_decode,
        )
        self.items = []
        for vid in self.videos:
            run = []
            for fid in self._frames[vid]:
                if run and int(fid) - int(run[-1]) != self.frame_step:
                    run = []
                run.append(fid)
                if len(run) >= self.sequence_len:
                    self.items.append(tuple((vid, f) for f in run[-self.sequence_len :]))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.sample(index)

    def sample(self, index, rotation=None):
        """Item ``index``, every frame of the sequence rotated by the same ``rotation`` ``[3, 3]`` if given."""
        frames, prev_maps, targets = zip(*(self._sample(vid, fid, rotation) for vid, fid in self.items[index]))
        return torch.stack(frames), torch.stack(prev_maps), torch.stack(targets)

    def fixations(self, index):
        """Gaze point counts of each frame of item ``index``, int64 numpy ``[T, H, W]``."""
        return np.stack([fixation_map(self._gaze[key], self.frame_h, self.frame_w) for key in self.items[index]])

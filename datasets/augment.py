"""The original's rotation augmentation (``--use_equirect_rotate --rot_y --rot_z``) on this project's tensors.

What the original (svip-lab/SphericalDNNs, ``datasets/data.py`` with ``utils/equirect_rotate.py``) did when
``--use_equirect_rotate`` was set: one rotation per sample (per sequence for the ConvLSTM), applied to the frame,
the previous map and the target alike, ``Equirect_Rotate(img, rot_x=0, rot_y, rot_z)``, angles in degrees:

- training: ``(rot_y, rot_z)`` drawn uniformly from ``(0, 60), (60, 0), (60, 60)`` (:data:`ORIGINAL_TRAIN_ROTATIONS`);
- evaluation: the fixed ``(--rot_y, --rot_z)`` (ints, degrees, default 0).

``rot_z`` turns about the polar axis (the content moves right by ``rot_z``), ``rot_y`` about the horizontal axis a
quarter turn right of the panorama's centre (the centre moves down by ``rot_y``); the matrix is
``Ry(rot_y) Rz(rot_z)`` (:func:`sconv.functional.rotation_matrix` with ``pitch=rot_y, yaw=rot_z``).

Differences, by design: the original sampled each output pixel's corner with nearest neighbour (a half-pixel bias)
and needed ``W = 2H``; here pixel centres are sampled bilinearly on the sphere (any ``H, W``), and gaze points are
rotated exactly (:func:`sconv.functional.rotate_points`), so a target can be rebuilt from rotated gaze
(``gaze_heatmap``) instead of resampled.

The training scripts' ``--use-equirect-rotate`` uses :class:`RandomlyRotated` with :class:`EpochSampler` (training:
the draw depends only on the seed, the epoch and the item, so it is the same with any number of DataLoader workers
or processes, and after ``-resume``) and :class:`FixedRotation` (evaluation at ``(--rot-y, --rot-z)``).
"""

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from sconv.functional.rotate import rotate_equirect, rotate_points, rotation_matrix

__all__ = [
    "ORIGINAL_TRAIN_ROTATIONS",
    "sample_rotation",
    "rotate_sample",
    "random_rotate_sample",
    "rotation_of",
    "EpochSampler",
    "RandomlyRotated",
    "FixedRotation",
]

# (rot_y, rot_z) in degrees: the original's training choices (y_z_list in its datasets/data.py).
ORIGINAL_TRAIN_ROTATIONS = ((0, 60), (60, 0), (60, 60))


def sample_rotation(generator=None, choices=ORIGINAL_TRAIN_ROTATIONS):
    """One ``(rot_y, rot_z)`` pair (degrees) drawn uniformly from ``choices`` with ``generator`` (a torch.Generator)."""
    if len(choices) == 0:
        raise ValueError("choices must hold at least one (rot_y, rot_z) pair")
    index = int(torch.randint(len(choices), (1,), generator=generator))
    rot_y, rot_z = choices[index]
    return float(rot_y), float(rot_z)


def _rotate_map(tensor, rotation, mode, name):
    """Rotate a ``[..., H, W]`` tensor (every leading slice by the same rotation)."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
        raise TypeError(f"{name} must be a tensor [..., H, W], got {type(tensor).__name__}")
    h, w = tensor.shape[-2:]
    rotated = rotate_equirect(tensor.reshape(1, -1, h, w), rotation.to(tensor.dtype), mode)
    return rotated.reshape(tensor.shape)


def _rotate_gaze(gaze, rotation):
    """Rotate one ``[N, 2]`` array of ``(x, y)`` gaze points, or a list of them (one per frame of a sequence)."""
    if isinstance(gaze, (list, tuple)) and len(gaze) and np.ndim(gaze[0]) == 2:
        return [_rotate_gaze(g, rotation) for g in gaze]
    if isinstance(gaze, torch.Tensor):
        return rotate_points(gaze, rotation)
    return rotate_points(np.asarray(gaze, dtype=np.float64), rotation).numpy()


def rotate_sample(frame=None, previous=None, target=None, gaze=None, *, rot_y, rot_z, mode="bilinear"):
    """Rotate one sample by ``Ry(rot_y) Rz(rot_z)`` (degrees, the original's ``Equirect_Rotate(., 0, rot_y, rot_z)``).

    Args:
        frame, previous, target: tensors ``[..., H, W]`` (e.g. ``[3, H, W]``, ``[1, H, W]``, or ``[T, C, H, W]`` for
            a sequence), or None; each is rotated with ``mode`` (``'bilinear'`` or ``'nearest'``).
        gaze: ``[N, 2]`` gaze points ``(x, y)`` in ``[0, 1]`` (longitude and colatitude fractions, as in
            ``datasets/data.py``), a list of them (one per frame), or None; rotated exactly.
        rot_y, rot_z: angles in degrees.

    Returns:
        ``(frame, previous, target, gaze)`` rotated, None where None was given; gaze as given (numpy arrays
        float64, or tensors).
    """
    rotation = rotation_of(rot_y, rot_z)
    return (
        None if frame is None else _rotate_map(frame, rotation, mode, "frame"),
        None if previous is None else _rotate_map(previous, rotation, mode, "previous"),
        None if target is None else _rotate_map(target, rotation, mode, "target"),
        None if gaze is None else _rotate_gaze(gaze, rotation),
    )


def random_rotate_sample(
    frame=None,
    previous=None,
    target=None,
    gaze=None,
    *,
    generator=None,
    choices=ORIGINAL_TRAIN_ROTATIONS,
    mode="bilinear",
):
    """:func:`rotate_sample` by one ``(rot_y, rot_z)`` of :func:`sample_rotation` (the original's training draw).

    Returns ``(frame, previous, target, gaze, (rot_y, rot_z))``.
    """
    rot_y, rot_z = sample_rotation(generator, choices)
    return (*rotate_sample(frame, previous, target, gaze, rot_y=rot_y, rot_z=rot_z, mode=mode), (rot_y, rot_z))


def rotation_of(rot_y, rot_z):
    """The float64 ``[3, 3]`` matrix of the original's ``Equirect_Rotate(., 0, rot_y, rot_z)`` (degrees)."""
    return rotation_matrix(yaw=rot_z, pitch=rot_y)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` for each index of ``sampler``, for :class:`RandomlyRotated`; ``set_epoch`` is passed
    on to ``sampler`` (e.g. a ``DistributedSampler``). The epoch travels with the index because a DataLoader's
    (persistent) workers hold their own copy of the dataset."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)

    def __len__(self):
        return len(self.sampler)


class RandomlyRotated(Dataset):
    """``dataset`` (``VRVideo`` or ``VRVideoLSTM``) with each item rotated by one ``(rot_y, rot_z)`` of ``choices``
    (degrees; the original's training set of rotations by default) drawn from ``(seed, epoch, index)``.

    Indexed by ``(epoch, index)`` (:class:`EpochSampler`); an item is ``dataset.sample(index, rotation)``: frame,
    previous map and target rotated together, once per sequence for the ConvLSTM.
    """

    def __init__(self, dataset, seed, choices=ORIGINAL_TRAIN_ROTATIONS):
        if len(choices) == 0:
            raise ValueError("choices must hold at least one (rot_y, rot_z) pair")
        self.dataset = dataset
        self.seed = int(seed)
        self.choices = tuple((float(rot_y), float(rot_z)) for rot_y, rot_z in choices)

    def angles(self, epoch, index):
        """The ``(rot_y, rot_z)`` of item ``index`` at ``epoch``."""
        generator = np.random.default_rng([self.seed % 2**63, int(epoch), int(index)])
        return self.choices[int(generator.integers(len(self.choices)))]

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"RandomlyRotated is indexed by (epoch, index) (use EpochSampler), got {key!r}")
        epoch, index = key
        return self.dataset.sample(index, rotation_of(*self.angles(epoch, index)))


class FixedRotation:
    """The evaluation's view of a test split (``VRVideo`` or ``VRVideoLSTM``) rotated by ``(rot_y, rot_z)``
    degrees: frames, targets, ground-truth previous maps and fixations of the rotated panoramas (the first frames'
    prior is not rotated: a deployed model knows nothing of the rotation). The interface ``engine.evaluate`` reads."""

    def __init__(self, dataset, rot_y, rot_z):
        self.dataset = dataset
        self.angles = (float(rot_y), float(rot_z))
        self.rotation = rotation_of(*self.angles)
        self.root, self.videos = dataset.root, dataset.videos

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset.sample(index, self.rotation)

    def frames_of(self, vid):
        return self.dataset.frames_of(vid)

    def previous_key(self, vid, fid):
        return self.dataset.previous_key(vid, fid)

    def frame(self, vid, fid):
        return self.dataset.frame(vid, fid, self.rotation)

    def target(self, vid, fid):
        return self.dataset.target(vid, fid, self.rotation)

    def previous_map(self, vid, fid):
        return self.dataset.previous_map(vid, fid, self.rotation)

    def fixations_of(self, vid, fid):
        return self.dataset.fixations_of(vid, fid, self.rotation)

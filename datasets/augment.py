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
"""

import numpy as np
import torch

from sconv.functional.rotate import rotate_equirect, rotate_points, rotation_matrix

__all__ = ["ORIGINAL_TRAIN_ROTATIONS", "sample_rotation", "rotate_sample", "random_rotate_sample"]

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
    rotation = rotation_matrix(yaw=rot_z, pitch=rot_y)
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

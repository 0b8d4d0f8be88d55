"""rotate_equirect and the crown convolution on a real equirectangular image: the Natural Earth shaded relief
raster (720 x 360, plate carree: row 0 at 90 N, column 0 at 180 W, as our grid) that cartopy's wheel ships.
``tools/setup_env.sh`` installs that wheel without its dependencies, for this raster alone: cartopy is never
imported, the file is found through its package spec. The tests skip where the wheel is absent."""

import importlib.util
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sconv.functional import rotate_equirect, rotation_matrix, spherical_conv

RASTER = os.path.join("data", "raster", "natural_earth", "50-natural-earth-1-downsampled.png")


@pytest.fixture(scope="module")
def earth():
    """``[1, 3, 360, 720]`` float64 in [0, 1]."""
    spec = importlib.util.find_spec("cartopy")
    path = os.path.join(spec.submodule_search_locations[0], RASTER) if spec is not None else None
    if path is None or not os.path.isfile(path):
        pytest.skip("needs cartopy's Natural Earth raster (tools/setup_env.sh installs the wheel, --no-deps)")
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    assert pixels.shape == (360, 720, 3)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_half_turns_are_exact_pixel_permutations(earth, mode):
    """A half turn about the y axis (pitch 180) maps (lat, lon) to (-lat, 180 - lon), about the x axis (roll 180) to
    (-lat, -lon): both move pixel centres onto pixel centres, so sampling must return the pixels themselves."""
    w = earth.shape[-1]
    pitch_half_turn = torch.roll(earth.flip(-2).flip(-1), w // 2, dims=-1)
    roll_half_turn = earth.flip(-2).flip(-1)
    torch.testing.assert_close(rotate_equirect(earth, rotation_matrix(pitch=180.0), mode), pitch_half_turn)
    torch.testing.assert_close(rotate_equirect(earth, rotation_matrix(roll=180.0), mode), roll_half_turn)


def test_round_trip_stays_within_the_interpolation_bound(earth):
    """Bilinear sampling returns a convex combination of the 4 pixels around the point, so rotating by R then R^T
    keeps every pixel between the min and max of its neighbourhood (checked on 5 x 5 windows, away from the poles
    where a pixel's neighbours on the sphere span more columns). The mean error falls with resolution."""
    r = rotation_matrix(37.0, 58.0, -21.0)
    mean_errors = []
    for factor in (4, 2):
        x = F.avg_pool2d(earth, factor)
        back = rotate_equirect(rotate_equirect(x, r), r.T)
        assert torch.isfinite(back).all()
        wrapped = F.pad(F.pad(x, (2, 2, 0, 0), mode="circular"), (0, 0, 2, 2), mode="replicate")
        low, high = -F.max_pool2d(-wrapped, 5, stride=1), F.max_pool2d(wrapped, 5, stride=1)
        h = x.shape[-2]
        latitude = 90 - (torch.arange(h, dtype=torch.float64) + 0.5) * 180 / h
        rows = latitude.abs() < 60
        excess = (low - back).clamp(min=0) + (back - high).clamp(min=0)
        torch.testing.assert_close(excess[..., rows, :], torch.zeros_like(excess[..., rows, :]), rtol=0, atol=1e-12)
        mean_errors.append((back - x).abs().mean())
    assert mean_errors[1] < mean_errors[0], mean_errors  # measured 0.0082 at 90 x 180, 0.0066 at 180 x 360


def test_against_pyequilib_on_real_content(earth):
    """pyequilib's equi2equi on the same image (conventions mapped as in test_rotate.test_against_pyequilib: both
    outputs taken through equilib's half-pixel-shifted grid). The mean difference is first order in the pixel size
    and falls with resolution; a wrong convention (pitch's sign) or no rotation is O(1) on real content."""
    equilib = pytest.importorskip("equilib", reason="needs pyequilib (installed by the `test` extra)")
    yaw, pitch, roll = 0.7, 0.4, -0.3
    kwargs = dict(z_down=False, mode="bilinear", clip_output=False)

    def mean_difference(x, rotation):
        theirs = equilib.equi2equi(x, rots=[dict(roll=roll, pitch=pitch, yaw=yaw)], **kwargs)
        ours = equilib.equi2equi(rotate_equirect(x, rotation), rots=[dict(roll=0.0, pitch=0.0, yaw=0.0)], **kwargs)
        return (theirs - ours).abs().mean()

    ours = rotation_matrix(yaw, -pitch, roll, degrees=False)
    coarse, fine = mean_difference(F.avg_pool2d(earth, 4), ours), mean_difference(F.avg_pool2d(earth, 2), ours)
    wrong = mean_difference(F.avg_pool2d(earth, 2), rotation_matrix(yaw, pitch, roll, degrees=False))
    assert torch.isfinite(torch.stack([coarse, fine, wrong])).all()
    assert fine < 0.8 * coarse and fine < 0.016, (coarse, fine)  # measured 0.0184, 0.0128 (0.0099 at 360 x 720)
    assert wrong > 5 * fine, (wrong, fine)  # measured 0.103


def test_crown_convolution_commutes_with_rotations_on_real_content(earth):
    """Exactly with a whole-pixel yaw (the crown's geometry is the same in every column); for other rotations an
    isotropic kernel (one weight per ring) commutes up to an error that falls with resolution."""
    gen = torch.Generator().manual_seed(0)
    rings = torch.rand(3, 3, 3, 1, generator=gen, dtype=torch.float64)
    weight = rings.expand(-1, -1, -1, 8).contiguous()

    def conv(x):
        return spherical_conv(x, weight, kernel_rad=math.pi / 8)

    x = F.interpolate(earth, size=(24, 48), mode="area")
    yaw = rotation_matrix(yaw=7 * 360 / 48)
    torch.testing.assert_close(conv(rotate_equirect(x, yaw)), rotate_equirect(conv(x), yaw), rtol=0, atol=1e-12)
    r = rotation_matrix(30.0, 50.0, 20.0)
    errors = []
    for size in ((24, 48), (48, 96)):
        x = F.interpolate(earth, size=size, mode="area")
        errors.append((conv(rotate_equirect(x, r)) - rotate_equirect(conv(x), r)).abs().mean())
    assert torch.isfinite(torch.stack(errors)).all() and errors[1] < errors[0] / 2, errors  # measured 5.6e-3, 2.1e-3

"""rotate_equirect, rotate_points, rotation_matrix, spherical_upsample and the rotation augmentation, against
independent references: slow float64 loops written from the formulas (NumPy, no sconv code), analytic functions on
the sphere, the exact gaze heatmap, and spherical padding + planar interpolation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.augment import ORIGINAL_TRAIN_ROTATIONS, random_rotate_sample, rotate_sample
from datasets.data import gaze_heatmap
from models.baseline_unet import SphericalUNet
from sconv.functional import (
    pixel_solid_angle,
    rotate_equirect,
    rotate_points,
    rotation_matrix,
    spherical_conv,
    spherical_upsample,
)
from sconv.functional.rotate import _pixel_directions, angles_of, apply_plan, sample_plan
from sconv.module import EquirectRotate, SphericalUpsample


def axis_matrices(rx, ry, rz):
    """The original's getRotMatrix (degrees): Rx(rx) @ Ry(ry) @ Rz(rz), written out."""
    a, b, c = np.deg2rad([rx, ry, rz])
    mx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    my = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    mz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return mx @ my @ mz


def lonlat_xyz(lon, lat):
    """The original's LonLat2Sphere."""
    return np.array([math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)])


def source_lonlat(i, j, h, w, r):
    """Longitude/latitude that output pixel centre (i, j) reads under out(p) = in(R^T p), the original's frame."""
    lon = 2 * math.pi * ((j + 0.5) / w - 0.5)
    lat = (0.5 - (i + 0.5) / h) * math.pi
    x, y, z = r.T @ lonlat_xyz(lon, lat)
    return math.atan2(y, x), math.atan2(z, math.hypot(x, y))


def reference_sample(image, row, col):
    """Bilinear on the sphere at continuous pixel coordinates (row, col) of image [C, H, W], one point."""
    c, h, w = image.shape
    value = np.zeros(c)
    r0 = math.floor(row)
    for rr, wr in ((r0, 1 - (row - r0)), (r0 + 1, row - r0)):
        cc = col
        if rr < 0 or rr >= h:  # across the pole: the same point seen from half a turn away
            rr = -1 - rr if rr < 0 else 2 * h - 1 - rr
            cc = col + w / 2
        c0 = math.floor(cc)
        fc = cc - c0
        value += wr * ((1 - fc) * image[:, rr, c0 % w] + fc * image[:, rr, (c0 + 1) % w])
    return value


def reference_rotate(image, r, mode):
    """Slow float64 rotation of image [C, H, W] (NumPy loops over output pixels)."""
    c, h, w = image.shape
    out = np.zeros_like(image)
    for i in range(h):
        for j in range(w):
            lon, lat = source_lonlat(i, j, h, w, r)
            col = w * (lon / (2 * math.pi) + 0.5) - 0.5  # continuous column, centres at integers
            row = h * (0.5 - lat / math.pi) - 0.5
            if mode == "nearest":
                out[:, i, j] = image[:, min(int(math.floor(row + 0.5)), h - 1), int(math.floor(col + 0.5)) % w]
            else:
                out[:, i, j] = reference_sample(image, row, col)
    return out


def reference_upsample(image):
    """Slow float64 x2 upsampling: output (i', j') is the input at pixel coordinates (i'/2 - 1/4, j'/2 - 1/4)."""
    c, h, w = image.shape
    out = np.zeros((c, 2 * h, 2 * w))
    for i in range(2 * h):
        for j in range(2 * w):
            out[:, i, j] = reference_sample(image, i / 2 - 0.25, j / 2 - 0.25)
    return out


def smooth_field(h, w, a=(1.2, -0.7, 0.9), r=None):
    """exp(a . v) at the pixel centres of an h x w grid, v the direction in the original's frame (rotated by r^T)."""
    theta = (np.arange(h) + 0.5) * math.pi / h
    phi = (np.arange(w) + 0.5) * 2 * math.pi / w
    t, p = np.meshgrid(theta, phi, indexing="ij")
    v = np.stack([-np.sin(t) * np.cos(p), -np.sin(t) * np.sin(p), np.cos(t)], axis=-1)
    if r is not None:
        v = v @ r  # R^T v for each row vector v
    return torch.from_numpy(np.exp(v @ np.asarray(a)))[None, None]


def test_rotation_matrix_is_the_originals_get_rot_matrix():
    for yaw, pitch, roll in [(60, 0, 0), (0, 60, 0), (60, 60, 0), (-33.3, 71.0, 12.5)]:
        expected = torch.from_numpy(axis_matrices(roll, pitch, yaw))
        torch.testing.assert_close(rotation_matrix(yaw, pitch, roll), expected, rtol=0, atol=1e-15)
    batched = rotation_matrix(torch.tensor([10.0, 20.0]), 30.0, torch.tensor([0.0, 5.0]))
    torch.testing.assert_close(batched[1], torch.from_numpy(axis_matrices(5, 30, 20)), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        rotation_matrix(math.pi / 3, degrees=False), torch.from_numpy(axis_matrices(0, 0, 60)), rtol=0, atol=1e-15
    )


@pytest.mark.parametrize("size", [(6, 12), (5, 9), (1, 2), (2, 1)])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_rotate_matches_slow_reference(size, mode):
    h, w = size
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, h, w, generator=gen, dtype=torch.float64)
    # Angles near, not at, 90 and 180 degrees: exactly there a source point can fall on a pole (whose longitude is
    # arbitrary) or on a cell border, where rounding picks either side.
    for angles in [(37.0, 58.0, -21.0), (0.3, 89.3, 0.0), (179.1, -88.7, 45.2)]:
        r = axis_matrices(angles[2], angles[1], angles[0])
        out = rotate_equirect(image[None], torch.from_numpy(r), mode=mode)[0]
        torch.testing.assert_close(out, torch.from_numpy(reference_rotate(image.numpy(), r, mode)), rtol=0, atol=1e-12)


def test_yaw_by_whole_pixels_is_a_roll():
    x = torch.rand(2, 3, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(rotate_equirect(x, rotation_matrix(yaw=3 * 360 / 16)), x.roll(3, -1), rtol=0, atol=1e-12)
    x32 = x.float()
    out = rotate_equirect(x32, rotation_matrix(yaw=-2 * 360 / 16).float())
    torch.testing.assert_close(out, x32.roll(-2, -1), rtol=0, atol=1e-5)


def interpolation_error(h, r):
    """Max error of rotating a smooth field by r against its analytic rotation, on an h x 2h grid."""
    out = rotate_equirect(smooth_field(h, 2 * h), torch.from_numpy(r))
    return (out - smooth_field(h, 2 * h, r=r)).abs().max()


def test_rotate_smooth_field_against_analytic_rotation():
    r = axis_matrices(20, 65, 140)
    coarse, fine = interpolation_error(16, r), interpolation_error(32, r)
    assert torch.isfinite(coarse) and torch.isfinite(fine)
    # bilinear: O(h^2); halving the pixel should cut the error by about 4.
    assert coarse < 0.1 and fine < coarse / 3, (coarse, fine)  # field values up to e^1.7; measured 0.062, 0.017


def test_round_trip_and_composition():
    x = smooth_field(32, 64)
    r1 = rotation_matrix(40, 70, 15)
    r2 = rotation_matrix(-100, 25, 80)
    torch.testing.assert_close(rotate_equirect(rotate_equirect(x, r1), r1.T), x, rtol=0, atol=0.03)
    twice = rotate_equirect(rotate_equirect(x, r1), r2)
    torch.testing.assert_close(twice, rotate_equirect(x, r2 @ r1), rtol=0, atol=0.03)
    torch.testing.assert_close(
        rotate_equirect(x, r2 @ r1), smooth_field(32, 64, r=(r2 @ r1).numpy()), rtol=0, atol=0.02
    )


def test_batched_rotation_is_per_item_and_module_matches():
    x = torch.rand(3, 2, 7, 12, dtype=torch.float64)
    rs = rotation_matrix(torch.tensor([10.0, 200.0, -30.0]), torch.tensor([80.0, -10.0, 45.0]), 17.0)
    out = rotate_equirect(x, rs)
    for k in range(3):
        torch.testing.assert_close(out[k : k + 1], rotate_equirect(x[k : k + 1], rs[k]), rtol=0, atol=1e-14)
    torch.testing.assert_close(EquirectRotate(rs[0])(x), rotate_equirect(x, rs[0]), rtol=0, atol=0)
    assert "mode='bilinear'" in repr(EquirectRotate(rs[0]))


def test_even_width_fast_path_equals_gather_path():
    # Even W goes through one grid_sample on the spherically padded panorama; odd W (and this check) through the
    # gather plan of sample_plan. The two must be the same rule.
    x = torch.rand(2, 3, 10, 20, dtype=torch.float64)
    rs = rotation_matrix(torch.tensor([13.0, -170.0]), torch.tensor([88.0, -47.0]), torch.tensor([5.0, 120.0]))
    dirs = _pixel_directions(10, 20, torch.float64, x.device)
    theta, phi = angles_of(dirs @ rs)
    plan = sample_plan(theta * (10 / math.pi) - 0.5, phi * (20 / (2 * math.pi)) - 0.5, 10, 20)
    torch.testing.assert_close(rotate_equirect(x, rs), apply_plan(x, *plan).view(2, 3, 10, 20), rtol=0, atol=1e-13)
    half = rotate_equirect(x.to(torch.bfloat16), rs.float())
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()


def test_gradient_and_no_nan_at_poles():
    x = torch.rand(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    r = rotation_matrix(33, 90, 0)  # takes the poles to the equator and back
    assert torch.autograd.gradcheck(lambda t: rotate_equirect(t, r), (x,))
    out = rotate_equirect(torch.rand(2, 3, 9, 18), rotation_matrix(torch.tensor([0.0, 90.0]), 90.0, 0.0).float())
    assert torch.isfinite(out).all()
    for shape in [(0, 3, 4, 8), (0, 3, 3, 5)]:  # empty batch, both paths
        assert rotate_equirect(torch.rand(shape), r).shape == shape
        assert spherical_upsample(torch.rand(shape)).shape == (0, 3, 2 * shape[2], 2 * shape[3])


def test_bad_arguments():
    x = torch.rand(1, 1, 4, 8)
    with pytest.raises(ValueError, match="rotation must be a rotation matrix"):
        rotate_equirect(x, 2 * torch.eye(3))
    with pytest.raises(ValueError, match="rotation must be a rotation matrix"):
        rotate_equirect(x, torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="rotation must have shape"):
        rotate_equirect(x, torch.eye(4))
    with pytest.raises(ValueError, match="batch size"):
        rotate_equirect(x, torch.eye(3).expand(2, 3, 3))
    with pytest.raises(ValueError, match="mode"):
        rotate_equirect(x, torch.eye(3), mode="bicubic")
    with pytest.raises(ValueError, match="mode must be one of"):
        sample_plan(torch.zeros(3), torch.zeros(3), 4, 8, mode="bicubic")
    with pytest.raises(ValueError, match="yaw must be finite"):
        rotation_matrix(float("nan"))
    with pytest.raises(ValueError, match="points must have shape"):
        rotate_points(torch.rand(4, 3), torch.eye(3))


def test_rotate_points_exact():
    pts = np.array([[0.5, 0.5], [0.1, 0.3], [0.9, 0.97]])
    moved = rotate_points(pts, rotation_matrix(yaw=90)).numpy()
    np.testing.assert_allclose(moved, [[0.75, 0.5], [0.35, 0.3], [0.15, 0.97]], rtol=0, atol=1e-12)
    # pitch 90: the centre of the panorama goes to the south pole
    np.testing.assert_allclose(rotate_points(pts[:1], rotation_matrix(pitch=90)).numpy()[0, 1], 1.0, atol=1e-12)
    # against the original's frame, one point at a time: direction of (x, y) is lon = 2 pi x - pi, lat = pi/2 - pi y
    r = axis_matrices(12, -48, 77)
    got = rotate_points(pts, torch.from_numpy(r)).numpy()
    for (x, y), (gx, gy) in zip(pts, got):
        v = r @ lonlat_xyz(2 * math.pi * x - math.pi, math.pi / 2 - math.pi * y)
        np.testing.assert_allclose(v, lonlat_xyz(2 * math.pi * gx - math.pi, math.pi / 2 - math.pi * gy), atol=1e-12)


def test_rotated_heatmap_equals_heatmap_of_rotated_gaze_and_keeps_total():
    rng = np.random.default_rng(3)
    pts = rng.random((6, 2)) * [1, 0.8] + [0, 0.1]
    r = rotation_matrix(-70, 55, 30)
    h, w = 64, 128
    heat = torch.from_numpy(gaze_heatmap(pts, h, w)).double()
    rotated = rotate_equirect(heat[None, None], r)[0, 0]
    rebuilt = torch.from_numpy(gaze_heatmap(rotate_points(pts, r).numpy(), h, w)).double()
    torch.testing.assert_close(rotated, rebuilt, rtol=0, atol=5e-3)  # measured 2.5e-3 at 64x128, 6e-4 at 128x256
    area = pixel_solid_angle(h, w)[:, None]
    total_in, total_out = (area * heat).sum(), (area * rotated).sum()
    torch.testing.assert_close(total_out, total_in, rtol=5e-4, atol=0)


def test_crown_convolution_commutes_with_rotations():
    gen = torch.Generator().manual_seed(0)
    weight = torch.rand(1, 1, 3, 8, generator=gen, dtype=torch.float64)
    x = torch.rand(1, 1, 16, 32, generator=gen, dtype=torch.float64)
    yaw = rotation_matrix(yaw=5 * 360 / 32)

    def conv(t, w=weight):
        return spherical_conv(t, w, kernel_rad=math.pi / 6)

    torch.testing.assert_close(conv(rotate_equirect(x, yaw)), rotate_equirect(conv(x), yaw), rtol=0, atol=1e-12)
    # Other rotations turn the crown's beta = 0 ("down") direction, so only an isotropic kernel (one value per ring)
    # commutes in the limit; the error of a smooth field falls with resolution.
    iso = weight[..., :1].expand(-1, -1, -1, 8).contiguous()
    r = rotation_matrix(30, 50, 20)
    errors = []
    for h in (16, 32):
        field = smooth_field(h, 2 * h)
        diff = conv(rotate_equirect(field, r), iso) - rotate_equirect(conv(field, iso), r)
        errors.append(diff.abs().max())
    assert torch.isfinite(torch.stack(errors)).all() and errors[1] < errors[0] / 2, errors


@pytest.mark.parametrize("size", [(4, 8), (3, 6), (5, 9), (1, 3), (1, 2)])
def test_spherical_upsample_against_slow_reference(size):
    # Even W: spherical_pad + planar bilinear + crop; odd W: the gather plan. Both against the per-pixel loop.
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    for k in range(2):
        expected = torch.from_numpy(reference_upsample(x[k].numpy()))
        torch.testing.assert_close(spherical_upsample(x[k : k + 1])[0], expected, rtol=0, atol=1e-14)
    if size[1] % 2 == 0:  # inside, planar bilinear; at the seam and poles, not
        planar = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(spherical_upsample(x)[..., 1:-1, 1:-1], planar[..., 1:-1, 1:-1], rtol=0, atol=1e-14)
    blocks = x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    torch.testing.assert_close(SphericalUpsample("nearest")(x), blocks, rtol=0, atol=0)
    torch.testing.assert_close(spherical_upsample(torch.ones(1, 1, *size)), torch.ones(1, 1, 2 * size[0], 2 * size[1]))


def test_spherical_upsample_smooth_field_and_gradient():
    up = spherical_upsample(smooth_field(16, 32))
    torch.testing.assert_close(up, smooth_field(32, 64), rtol=0.02, atol=0)  # measured 1.0% at most
    x = torch.rand(1, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spherical_upsample, (x,))


def test_augmentation_follows_the_original():
    gen = torch.Generator().manual_seed(0)
    draws = {random_rotate_sample(torch.zeros(1, 2, 4), generator=gen)[-1] for _ in range(40)}
    assert draws == {(float(y), float(z)) for y, z in ORIGINAL_TRAIN_ROTATIONS}
    frame = torch.rand(3, 8, 16, dtype=torch.float64)
    target = torch.rand(1, 8, 16, dtype=torch.float64)
    gaze = np.array([[0.5, 0.5], [0.2, 0.7]])
    f2, p2, t2, g2 = rotate_sample(frame, None, target, gaze, rot_y=60, rot_z=60)
    r = torch.from_numpy(axis_matrices(0, 60, 60))
    torch.testing.assert_close(
        f2, torch.from_numpy(reference_rotate(frame.numpy(), r.numpy(), "bilinear")), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(t2, rotate_equirect(target[None], r)[0], rtol=0, atol=1e-14)
    assert p2 is None and isinstance(g2, np.ndarray)
    np.testing.assert_allclose(g2, rotate_points(gaze, r).numpy(), rtol=0, atol=0)
    # rot_z alone: the content moves right by rot_z
    _, _, t3, _ = rotate_sample(None, None, target, None, rot_y=0, rot_z=45)
    torch.testing.assert_close(t3, target.roll(2, -1), rtol=0, atol=1e-12)
    # a ConvLSTM sequence: every frame and every frame's gaze by the same rotation
    frames = torch.rand(2, 3, 8, 16, dtype=torch.float64)
    f4, _, _, g4 = rotate_sample(frames, None, None, [gaze, gaze[:1]], rot_y=60, rot_z=0)
    r4 = rotation_matrix(pitch=60)
    torch.testing.assert_close(f4[1], rotate_equirect(frames[1:], r4)[0], rtol=0, atol=0)
    assert len(g4) == 2
    np.testing.assert_allclose(g4[1], rotate_points(gaze[:1], r4).numpy(), rtol=0, atol=0)
    batched = rotate_points(torch.from_numpy(np.stack([gaze, gaze])), torch.stack([r4, r]))
    torch.testing.assert_close(batched[1], rotate_points(torch.from_numpy(gaze), r), rtol=0, atol=0)


def test_unet_upsample_option():
    torch.manual_seed(0)
    nearest = SphericalUNet((16, 32)).eval()
    spherical = SphericalUNet((16, 32), upsample="spherical").eval()
    spherical.load_state_dict(nearest.state_dict())  # the option adds no parameters
    frame, previous = torch.rand(2, 3, 16, 32), torch.rand(2, 1, 16, 32)
    with torch.no_grad():
        a, b = nearest(frame, previous), spherical(frame, previous)
    assert torch.isfinite(a).all() and torch.isfinite(b).all() and not torch.equal(a, b)
    with pytest.raises(ValueError, match="upsample"):
        SphericalUNet((16, 32), upsample="bicubic")


def test_against_pyequilib():
    """pyequilib's equi2equi (its own grid and sampling). Its images put row 0 at latitude -90 degrees of its frame,
    so its (yaw, pitch, roll) with z_down=False is our rotation_matrix(yaw, -pitch, roll); its grid samples half a
    pixel off (its identity rotation shifts the image), so both libraries' outputs are taken through equilib's grid
    and the difference is first order in the pixel size; a wrong convention gives O(1)."""
    equilib = pytest.importorskip("equilib", reason="needs pyequilib (installed by the `test` extra)")
    from equilib.torch_utils import create_rotation_matrix

    yaw, pitch, roll = 0.7, 0.4, -0.3
    theirs = create_rotation_matrix(roll=roll, pitch=pitch, yaw=yaw, z_down=False, dtype=torch.float64)
    flip = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))  # their frame: z toward row 0 = down
    ours = rotation_matrix(yaw, -pitch, roll, degrees=False)
    torch.testing.assert_close(flip @ theirs.T @ flip, ours, rtol=0, atol=1e-15)

    def difference(h, r):
        x = smooth_field(h, 2 * h)
        still = dict(roll=0.0, pitch=0.0, yaw=0.0)
        kwargs = dict(z_down=False, mode="bilinear", clip_output=False)
        a = equilib.equi2equi(x, rots=[dict(roll=roll, pitch=pitch, yaw=yaw)], **kwargs)
        b = equilib.equi2equi(rotate_equirect(x, r), rots=[still], **kwargs)
        return (a - b).abs().max() / x.abs().max()

    coarse, fine = difference(32, ours), difference(64, ours)
    assert fine < 0.08 and fine < 0.6 * coarse, (coarse, fine)  # measured 0.133, 0.066 (0.033 at 128 x 256)
    assert difference(32, rotation_matrix(yaw, pitch, roll, degrees=False)) > 0.3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("width", [20, 21])  # grid_sample path and gather path
def test_cuda_equals_cpu(width):
    x = torch.rand(3, 2, 11, width, dtype=torch.float64)
    rs = rotation_matrix(torch.tensor([10.0, 200.0, -30.0]), torch.tensor([80.0, -10.0, 45.0]), 17.0)
    for mode in ("bilinear", "nearest"):
        torch.testing.assert_close(rotate_equirect(x.cuda(), rs, mode).cpu(), rotate_equirect(x, rs, mode))
        torch.testing.assert_close(rotate_equirect(x.cuda(), rs.cuda(), mode).cpu(), rotate_equirect(x, rs, mode))
    torch.testing.assert_close(spherical_upsample(x.cuda()).cpu(), spherical_upsample(x))
    xf = x.float().cuda().requires_grad_()
    rotate_equirect(xf, rs.float()).sum().backward()
    assert torch.isfinite(xf.grad).all()

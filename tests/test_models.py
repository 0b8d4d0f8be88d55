"""The saliency networks: planar-twin kernel sizes against a brute-force crown count, shapes, gradients, ablation
switches, longitude equivariance of the spherical U-Net, and the ConvLSTM's recurrence."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from models import SphericalConvLSTMNet, SphericalUNet, crown_tap_count, planar_kernel_size
from sconv.module.sconv import SphericalConv
from sconv.module.spool import SphericalPooling
from tests import reference

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "conv7")
# (in, out, kernel_rad, kernel_size, grid scale) of the original architecture.
ARCHITECTURE = {
    "conv1": (4, 64, math.pi / 32, (8, 16), 1),
    "conv2": (64, 128, math.pi / 16, (4, 8), 2),
    "conv3": (128, 256, math.pi / 4, (4, 8), 4),
    "conv4": (256, 256, math.pi, (8, 16), 8),
    "conv5": (512, 128, math.pi / 4, (4, 8), 4),
    "conv6": (256, 64, math.pi / 16, (4, 8), 2),
    "conv7": (128, 1, math.pi / 32, (4, 8), 1),
}


def brute_force_tap_count(h, w, r):
    """Mean over all output pixels (weighted by exact pixel solid angle) of the input centres within r, by loops."""
    theta, phi = reference.grid(h, w)
    total, area_sum = 0.0, 0.0
    for i in range(h):
        area = (2 * math.pi / w) * (math.cos(i * math.pi / h) - math.cos((i + 1) * math.pi / h))
        for j in range(w):
            p = reference.unit(theta[i], phi[j])
            count = 0
            for k in range(h):
                for m in range(w):
                    q = reference.unit(theta[k], phi[m])
                    if math.atan2(np.linalg.norm(np.cross(p, q)), p @ q) <= r + 1e-9:
                        count += 1
            total += area * count
            area_sum += area
    return total / area_sum


@pytest.mark.parametrize("h, w, r", [(8, 16, math.pi / 8), (6, 12, math.pi / 3), (8, 8, 0.5), (4, 8, math.pi)])
def test_crown_tap_count_matches_brute_force(h, w, r):
    assert crown_tap_count(h, w, r) == pytest.approx(brute_force_tap_count(h, w, r), rel=1e-12)


def test_crown_tap_count_analytic_limits():
    # r = pi holds the whole sphere; a tiny radius only the pixel itself.
    assert crown_tap_count(8, 16, math.pi) == 128
    assert crown_tap_count(16, 32, 1e-3) == 1
    # Small crowns near the equator: about the crown's solid angle over the pixel's (2 pi (1 - cos r) / A).
    h, w, r = 96, 192, math.pi / 12
    pixel_area = 4 * math.pi / (h * w)
    assert crown_tap_count(h, w, r) == pytest.approx(2 * math.pi * (1 - math.cos(r)) / pixel_area, rel=0.15)


@pytest.mark.parametrize("h, w, r", [(64, 128, math.pi / 32), (32, 64, math.pi / 4), (8, 16, math.pi), (16, 32, 0.05)])
def test_planar_kernel_size_is_the_nearest_odd_square(h, w, r):
    taps = crown_tap_count(h, w, r)
    k = planar_kernel_size(h, w, r)
    assert k % 2 == 1
    assert all(abs(k * k - taps) <= abs(m * m - taps) for m in range(1, 4 * k + 3, 2))


def test_planar_kernel_size_examples():
    assert planar_kernel_size(8, 16, math.pi) == 11  # 128 taps: 121 is nearer than 169
    assert planar_kernel_size(16, 32, 1e-3) == 1


def test_unet_layers_are_the_original_architecture():
    model = SphericalUNet((32, 64))
    for name, (c_in, c_out, r, size, _) in ARCHITECTURE.items():
        conv = getattr(model, name)
        assert isinstance(conv, SphericalConv)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (c_in, c_out, size)
        assert conv.kernel_rad == pytest.approx(r)
        assert conv.bias is None
    assert isinstance(model.pool, SphericalPooling)
    assert [getattr(model, f"bn{i}").num_features for i in range(1, 7)] == [64, 128, 256, 256, 128, 64]


def check_gradients(model, output):
    output.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("use_sconv, use_spooling", [(True, True), (True, False), (False, True), (False, False)])
def test_unet_shapes_gradients_and_ablations(use_sconv, use_spooling):
    torch.manual_seed(0)
    h, w = 16, 32
    model = SphericalUNet((h, w), use_sconv=use_sconv, use_spooling=use_spooling)
    for name, (c_in, c_out, r, _, scale) in ARCHITECTURE.items():
        conv = getattr(model, name)
        if use_sconv:
            assert isinstance(conv, SphericalConv)
        else:
            k = planar_kernel_size(h // scale, w // scale, r)
            assert type(conv) is nn.Conv2d
            assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (
                c_in,
                c_out,
                (k, k),
                (k // 2, k // 2),
            )
    assert isinstance(model.pool, SphericalPooling if use_spooling else nn.MaxPool2d)
    frame, previous = torch.rand(2, 3, h, w), torch.rand(2, 1, h, w)
    out = model(frame, previous)
    assert out.shape == (2, 1, h, w)
    check_gradients(model, out)


def test_unet_is_equivariant_to_longitude_shifts_and_its_planar_twin_is_not():
    # Shifting the panorama by 8 columns (one bottleneck column) shifts the spherical U-Net's output by as much:
    # the sphere has no seam. The planar twin pads with zeros at the seam and is not.
    torch.manual_seed(0)
    h, w, shift = 16, 32, 8
    frame, previous = torch.rand(2, 3, h, w, dtype=torch.float64), torch.rand(2, 1, h, w, dtype=torch.float64)
    for use_sconv, equivariant in ((True, True), (False, False)):
        model = SphericalUNet((h, w), use_sconv=use_sconv).double()
        out = model(frame, previous)
        shifted = model(frame.roll(shift, 3), previous.roll(shift, 3))
        error = (shifted - out.roll(shift, 3)).abs().max().item()
        assert (error < 1e-9) == equivariant, (use_sconv, error)


def test_unet_rejects_bad_input():
    with pytest.raises(ValueError, match="input_size"):
        SphericalUNet((20, 40))
    model = SphericalUNet((16, 32), use_sconv=False)
    with pytest.raises(ValueError, match="frame"):
        model(torch.rand(1, 4, 16, 32), torch.rand(1, 1, 16, 32))
    with pytest.raises(ValueError, match="previous_map"):
        model(torch.rand(1, 3, 16, 32), torch.rand(1, 2, 16, 32))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 3, 12, 32), torch.rand(1, 1, 12, 32))


def test_convlstm_in_the_decoder_is_the_originals_sconvlstm():
    # The original's SconvLSTM (its models/spherical_unet.py): the 2-layer ConvLSTM (64 and 64 hidden channels, crown
    # r = pi, 8 x 16 nodes) runs on the decoder's r6 (64 channels at H/2); its hidden state and r1 make the output.
    torch.manual_seed(0)
    h, w = 16, 32
    model = SphericalConvLSTMNet((h, w))
    assert model.lstm_place == "decoder" and model.lstm.hidden_channels == [64, 64] and model.lstm.input_channels == 64
    for cell in model.lstm.cells:
        assert isinstance(cell.conv, SphericalConv) and cell.conv.in_channels == 128 and cell.conv.out_channels == 256
        assert cell.conv.kernel_size == (8, 16) and cell.conv.kernel_rad == pytest.approx(math.pi)
    frames, previous = torch.rand(2, 2, 3, h, w), torch.rand(2, 2, 1, h, w)
    out, state = model(frames, previous)
    assert out.shape == (2, 2, 1, h, w)
    assert len(state) == 2 and all(s.shape == (2, 64, h // 2, w // 2) for pair in state for s in pair)
    check_gradients(model, out)
    # Frame by frame through step() (the evaluation's and the demo's interface) is the sequence (eval mode).
    model.eval()
    with torch.no_grad():
        whole, _ = model(frames, previous)
        first, carried = model.step(frames[:, 0], previous[:, 0])
        second, _ = model.step(frames[:, 1], previous[:, 1], carried)
    torch.testing.assert_close(torch.stack([first, second], 1), whole, rtol=1e-5, atol=1e-6)


def test_convlstm_at_the_bottleneck_shapes_and_gradients():
    # The other placement: 256 hidden channels at H/8 between the encoder and the decoder. One time step keeps this
    # test short: the gate convolutions hold 2 x 67M weights.
    torch.manual_seed(0)
    h, w = 16, 32
    model = SphericalConvLSTMNet((h, w), lstm_place="bottleneck")
    for cell in model.lstm.cells:
        assert isinstance(cell.conv, SphericalConv)
        assert cell.conv.kernel_size == (8, 16) and cell.conv.kernel_rad == pytest.approx(math.pi)
    assert model.lstm.hidden_channels == [256, 256]
    out, state = model(torch.rand(2, 1, 3, h, w), torch.rand(2, 1, 1, h, w))
    assert out.shape == (2, 1, 1, h, w)
    assert len(state) == 2 and all(s.shape == (2, 256, h // 8, w // 8) for pair in state for s in pair)
    check_gradients(model, out)


@pytest.mark.parametrize("place, scale", [("bottleneck", 8), ("decoder", 2)])
def test_convlstm_planar_twin_and_recurrence(place, scale):
    # Frame by frame with the state passed back equals the whole sequence at once (eval mode: BatchNorm then
    # does not depend on how the frames are batched), and the state carries information between frames.
    torch.manual_seed(0)
    h, w, steps = 16, 32, 3
    model = SphericalConvLSTMNet((h, w), use_sconv=False, use_spooling=False, use_sconvlstm=False, lstm_place=place)
    k = planar_kernel_size(h // scale, w // scale, math.pi)
    for cell in model.lstm.cells:
        assert type(cell.conv) is nn.Conv2d and cell.conv.kernel_size == (k, k) and cell.conv.bias is not None
    frames, previous = torch.rand(2, steps, 3, h, w), torch.rand(2, steps, 1, h, w)
    out, _ = model(frames, previous)
    assert out.shape == (2, steps, 1, h, w)
    check_gradients(model, out)

    model.eval()
    with torch.no_grad():
        whole, _ = model(frames, previous)
        state, parts, states = None, [], []
        for t in range(steps):
            part, state = model(frames[:, t : t + 1], previous[:, t : t + 1], state)
            parts.append(part)
            states.append(state)
        torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-6)
        # Started afresh on frame 1, the LSTM's state (and so the output) differs from the continued one.
        fresh, fresh_state = model(frames[:, 1:2], previous[:, 1:2])
        continued_cell = states[1][1][1]
        assert (fresh_state[1][1] - continued_cell).abs().max() > 0.1 * continued_cell.abs().max()
        assert (fresh - whole[:, 1:2]).abs().max() > 1e-5


def test_convlstm_rejects_bad_input():
    model = SphericalConvLSTMNet((16, 32), use_sconv=False, use_sconvlstm=False)
    with pytest.raises(ValueError, match="frames"):
        model(torch.rand(2, 3, 16, 32), torch.rand(2, 1, 16, 32))
    with pytest.raises(ValueError, match="previous_maps"):
        model(torch.rand(2, 2, 3, 16, 32), torch.rand(2, 3, 1, 16, 32))
    with pytest.raises(ValueError, match="lstm_place must be one of"):
        SphericalConvLSTMNet((16, 32), lstm_place="encoder")

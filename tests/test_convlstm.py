"""Spherical ConvLSTM: gates against a hand-written step, sequence wiring against a manual loop over cells."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sconv.functional.sconv import spherical_conv
from sconv.module.convlstm import SphericalConvLSTM, SphericalConvLSTMCell
from sconv.module.sconv import SphericalConv


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def planar_conv(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, 3, padding="same")


def manual_step(gates, c):
    """The ConvLSTM update written out, gate order i, f, o, g."""
    hidden = c.shape[1]
    i = torch.sigmoid(gates[:, :hidden])
    f = torch.sigmoid(gates[:, hidden : 2 * hidden])
    o = torch.sigmoid(gates[:, 2 * hidden : 3 * hidden])
    g = torch.tanh(gates[:, 3 * hidden :])
    c_next = f * c + i * g
    return o * torch.tanh(c_next), c_next


def test_planar_cell_step_matches_manual_gates():
    cell = SphericalConvLSTMCell(3, 4, conv=planar_conv).double()
    x, h, c = torch.randn(2, 3, 6, 8, dtype=torch.float64), *torch.randn(2, 2, 4, 6, 8, dtype=torch.float64)
    gates = F.conv2d(torch.cat([x, h], 1), cell.conv.weight, cell.conv.bias, padding=1)
    expected = manual_step(gates, c)
    for actual, want in zip(cell(x, (h, c)), expected):
        torch.testing.assert_close(actual, want)
    # No state means zeros, on the input's dtype.
    h0, c0 = cell(x)
    assert h0.dtype == torch.float64
    zeros = torch.zeros(2, 4, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(
        h0, manual_step(F.conv2d(torch.cat([x, zeros], 1), cell.conv.weight, cell.conv.bias, padding=1), zeros)[0]
    )


def test_spherical_cell_step_matches_manual_gates():
    cell = SphericalConvLSTMCell(2, 3, kernel_rad=math.pi / 2, kernel_size=(3, 4)).double()
    assert isinstance(cell.conv, SphericalConv)
    assert cell.conv.kernel_size == (3, 4) and cell.conv.bias is not None
    x, h, c = torch.randn(2, 2, 4, 8, dtype=torch.float64), *torch.randn(2, 2, 3, 4, 8, dtype=torch.float64)
    gates = spherical_conv(torch.cat([x, h], 1), cell.conv.weight, cell.conv.bias, kernel_rad=math.pi / 2)
    for actual, want in zip(cell(x, (h, c)), manual_step(gates, c)):
        torch.testing.assert_close(actual, want)


def test_original_configuration_is_equivariant_to_longitude_shifts():
    # kernel_rad = pi, (8, 16) nodes at the 8 x 16 bottleneck: the crown is the whole sphere.
    lstm = SphericalConvLSTM(2, 3, num_layers=2).double()
    x = torch.randn(1, 2, 2, 8, 16, dtype=torch.float64)
    (out,), ((h, c),) = lstm(x)
    assert out.shape == (1, 2, 3, 8, 16) and h.shape == c.shape == (1, 3, 8, 16)
    (shifted,), _ = lstm(x.roll(3, dims=-1))
    torch.testing.assert_close(shifted, out.roll(3, dims=-1))


def test_sequence_matches_manual_loop_over_cells():
    lstm = SphericalConvLSTM(2, [3, 5], num_layers=2, return_all_layers=True, conv=planar_conv).double()
    x = torch.randn(2, 4, 2, 6, 8, dtype=torch.float64)
    outputs, states = lstm(x)
    layer_input = list(x.unbind(1))
    for layer, cell in enumerate(lstm.cells):
        state, hidden = None, []
        for step in layer_input:
            state = cell(step, state)
            hidden.append(state[0])
        torch.testing.assert_close(outputs[layer], torch.stack(hidden, 1))
        for actual, want in zip(states[layer], state):
            torch.testing.assert_close(actual, want)
        layer_input = hidden
    assert [o.shape[2] for o in outputs] == [3, 5]

    # Only the last layer by default.
    lstm.return_all_layers = False
    last_outputs, last_states = lstm(x)
    assert len(last_outputs) == len(last_states) == 1
    torch.testing.assert_close(last_outputs[0], outputs[1])


def test_explicit_hidden_state_continues_the_sequence():
    lstm = SphericalConvLSTM(2, [3, 4], num_layers=2, return_all_layers=True, conv=planar_conv).double()
    x = torch.randn(2, 5, 2, 4, 6, dtype=torch.float64)
    full_outputs, full_states = lstm(x)
    _, mid_states = lstm(x[:, :3])
    tail_outputs, tail_states = lstm(x[:, 3:], hidden_state=mid_states)
    for full, tail in zip(full_outputs, tail_outputs):
        torch.testing.assert_close(tail, full[:, 3:])
    for full, tail in zip(full_states, tail_states):
        torch.testing.assert_close(tail[1], full[1])


def test_time_first_layout():
    batch_first = SphericalConvLSTM(2, 3, num_layers=2, conv=planar_conv).double()
    time_first = SphericalConvLSTM(2, 3, num_layers=2, conv=planar_conv, batch_first=False).double()
    time_first.load_state_dict(batch_first.state_dict())
    x = torch.randn(2, 3, 2, 4, 6, dtype=torch.float64)
    (out_bf,), ((h_bf, _),) = batch_first(x)
    (out_tf,), ((h_tf, _),) = time_first(x.transpose(0, 1))
    assert out_tf.shape == (3, 2, 3, 4, 6)
    torch.testing.assert_close(out_tf, out_bf.transpose(0, 1))
    torch.testing.assert_close(h_tf, h_bf)


@pytest.mark.parametrize("batch", [0, 1])
def test_batch_sizes_and_state_dtype(batch):
    lstm = SphericalConvLSTM(2, 3, conv=planar_conv)
    x = torch.randn(batch, 2, 2, 4, 6, requires_grad=True)
    (out,), ((h, c),) = lstm(x)
    assert out.shape == (batch, 2, 3, 4, 6) and h.dtype == c.dtype == torch.float32
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_cell_gradcheck():
    planar = SphericalConvLSTMCell(1, 2, conv=planar_conv).double()
    spherical = SphericalConvLSTMCell(1, 1, kernel_rad=math.pi / 2, kernel_size=(2, 4)).double()
    for cell, hidden in [(planar, 2), (spherical, 1)]:
        names = [name for name, _ in cell.named_parameters()]

        def step(x, h, c, *params, cell=cell, names=names):
            return torch.func.functional_call(cell, dict(zip(names, params)), (x, (h, c)))

        x = torch.randn(1, 1, 4, 6, dtype=torch.float64, requires_grad=True)
        h, c = torch.randn(2, 1, hidden, 4, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(step, (x, h, c, *cell.parameters()))


def test_extra_repr():
    assert "input_channels=2, hidden_channels=3" in repr(SphericalConvLSTMCell(2, 3, conv=planar_conv))
    text = repr(SphericalConvLSTM(2, [3, 4], num_layers=2, kernel_size=(2, 4)))
    assert "hidden_channels=[3, 4], num_layers=2, batch_first=True, return_all_layers=False" in text
    assert "kernel_size=(2, 4)" in text  # the gate SphericalConv's own repr


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda cell, lstm, x: cell(x[:, 0, :1]), ValueError, "x must have 2 channels"),
        (lambda cell, lstm, x: cell(x[:, 0].long()), TypeError, "x"),
        (lambda cell, lstm, x: cell(x[:, 0], torch.zeros(2, 3, 4, 6)), ValueError, "state"),
        (lambda cell, lstm, x: cell(x[:, 0], (torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 4, 6))), ValueError, "h"),
        (lambda cell, lstm, x: cell(x[:, 0], (torch.zeros(2, 3, 4, 6), None)), TypeError, "c"),
        (lambda cell, lstm, x: lstm(x[0]), ValueError, "x must have shape"),
        (lambda cell, lstm, x: lstm(x.numpy()), TypeError, "x"),
        (lambda cell, lstm, x: lstm(x[:, :0]), ValueError, "time step"),
        (lambda cell, lstm, x: lstm(x, hidden_state=[None]), ValueError, "hidden_state"),
        (lambda cell, lstm, x: SphericalConvLSTM(2, [3, 4], num_layers=3), ValueError, "hidden_channels"),
        (lambda cell, lstm, x: SphericalConvLSTM(2, 3, num_layers=0), ValueError, "num_layers"),
        (lambda cell, lstm, x: SphericalConvLSTMCell(2, 0), ValueError, "hidden_channels"),
        (lambda cell, lstm, x: SphericalConvLSTMCell(2.5, 3), TypeError, "input_channels"),
        (lambda cell, lstm, x: SphericalConvLSTMCell(2, 3, conv="conv2d"), TypeError, "conv"),
        (lambda cell, lstm, x: SphericalConvLSTMCell(2, 3, kernel_rad=4.0), ValueError, "kernel_rad"),
        (
            lambda cell, lstm, x: SphericalConvLSTMCell(2, 3, conv=lambda i, o: nn.Conv2d(i, o, 3))(x[:, 0]),
            ValueError,
            "conv must map",
        ),
    ],
)
def test_bad_input_raises(call, error, match):
    cell = SphericalConvLSTMCell(2, 3, conv=planar_conv)
    lstm = SphericalConvLSTM(2, 3, num_layers=2, conv=planar_conv)
    x = torch.randn(2, 3, 2, 4, 6)
    with pytest.raises(error, match=match):
        call(cell, lstm, x)

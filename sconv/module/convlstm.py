"""Spherical ConvLSTM: the usual ConvLSTM with its gate convolution a spherical crown convolution.

Gates from one convolution of ``[x, h]`` to ``4 * hidden`` channels, split as ``i, f, o, g``:

    c' = sigmoid(f) * c + sigmoid(i) * tanh(g),    h' = sigmoid(o) * tanh(c')

``conv`` swaps the convolution (e.g. an ``nn.Conv2d`` factory for a planar twin in an ablation).
"""

import math
import numbers

import torch
from torch import nn

from sconv.functional.common import check_input, positive_int
from sconv.module.sconv import SphericalConv

__all__ = ["SphericalConvLSTMCell", "SphericalConvLSTM"]


def _check_state(state, expected):
    """``state`` must be a pair ``(h, c)`` of tensors of shape ``expected``."""
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ValueError(f"state must be None or a pair (h, c) of tensors of shape {expected}, got {state!r:.80}")
    for name, s in zip(("h", "c"), state):
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"state {name} must be a torch.Tensor of shape {expected}, got {type(s).__name__}")
        if tuple(s.shape) != expected:
            raise ValueError(f"state {name} must have shape {expected}, got {tuple(s.shape)}")


class SphericalConvLSTMCell(nn.Module):
    """One ConvLSTM step on ``H x W`` panoramas.

    Args:
        input_channels: channels ``C`` of the input ``x``.
        hidden_channels: channels of the hidden and cell states.
        kernel_rad: crown radius of the gate ``SphericalConv`` (radians; the original used ``pi``).
        kernel_size: ``(kh, kw)`` kernel nodes of the gate ``SphericalConv`` (the original used ``(8, 16)``).
        bias: whether the gate convolution has a bias.
        conv: optional factory ``conv(in_channels, out_channels) -> nn.Module`` for the gate convolution, called
            with ``(input_channels + hidden_channels, 4 * hidden_channels)``; it must keep ``H x W``. When given,
            ``kernel_rad``, ``kernel_size`` and ``bias`` are not used.

    Shape:
        - x: ``[B, input_channels, H, W]``
        - state: ``(h, c)``, each ``[B, hidden_channels, H, W]``, or None for zeros
        - Output: ``(h', c')``, each ``[B, hidden_channels, H, W]``
    """

    def __init__(self, input_channels, hidden_channels, kernel_rad=math.pi, kernel_size=(8, 16), bias=True, conv=None):
        super().__init__()
        self.input_channels = positive_int(input_channels, "input_channels")
        self.hidden_channels = positive_int(hidden_channels, "hidden_channels")
        gate_in, gate_out = self.input_channels + self.hidden_channels, 4 * self.hidden_channels
        if conv is None:
            self.conv = SphericalConv(
                gate_in, gate_out, kernel_rad=kernel_rad, kernel_sr=None, kernel_size=kernel_size, bias=bias
            )
        elif callable(conv):
            self.conv = conv(gate_in, gate_out)
        else:
            raise TypeError(f"conv must be None or a callable conv(in_channels, out_channels), got {conv!r}")

    def init_state(self, x):
        """Zero ``(h, c)`` for ``x`` ``[B, C, H, W]``, on its device and dtype."""
        b, _, h, w = x.shape
        zeros = x.new_zeros(b, self.hidden_channels, h, w)
        return zeros, zeros.clone()

    def forward(self, x, state=None):
        check_input(x, "x")
        if x.shape[1] != self.input_channels:
            raise ValueError(f"x must have {self.input_channels} channels (input_channels), got {x.shape[1]}")
        if state is None:
            state = self.init_state(x)
        expected = (x.shape[0], self.hidden_channels, *x.shape[2:])
        _check_state(state, expected)
        h, c = state
        gates = self.conv(torch.cat([x, h], dim=1))
        if gates.shape != (expected[0], 4 * self.hidden_channels, *expected[2:]):
            raise ValueError(
                f"conv must map [B, {self.input_channels + self.hidden_channels}, H, W] to "
                f"[B, {4 * self.hidden_channels}, H, W] (same H x W), got {tuple(gates.shape)}"
            )
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def extra_repr(self):
        return f"input_channels={self.input_channels}, hidden_channels={self.hidden_channels}"


class SphericalConvLSTM(nn.Module):
    """A stack of :class:`SphericalConvLSTMCell` run over a sequence.

    Args:
        input_channels: channels of the input frames.
        hidden_channels: an int (every layer) or a list with one entry per layer.
        num_layers: number of stacked cells; layer ``l > 0`` reads layer ``l - 1``'s hidden states.
        kernel_rad, kernel_size, bias, conv: passed to every cell (see :class:`SphericalConvLSTMCell`).
        batch_first: input and outputs are ``[B, T, C, H, W]`` if True, else ``[T, B, C, H, W]``.
        return_all_layers: return every layer's outputs and last state, else only the last layer's.

    Shape:
        - x: ``[B, T, input_channels, H, W]`` (batch_first) or ``[T, B, input_channels, H, W]``, ``T >= 1``
        - hidden_state: None (zeros) or a list of ``(h, c)`` per layer, each ``[B, hidden_channels[l], H, W]``
        - Output: ``(layer_outputs, last_states)``: ``layer_outputs`` a list of hidden-state sequences
          ``[B, T, hidden_channels[l], H, W]`` (or ``[T, B, ...]`` as the input), ``last_states`` a list of the
          final ``(h, c)``; one entry per returned layer.
    """

    def __init__(
        self,
        input_channels,
        hidden_channels,
        num_layers=1,
        kernel_rad=math.pi,
        kernel_size=(8, 16),
        batch_first=True,
        bias=True,
        return_all_layers=False,
        conv=None,
    ):
        super().__init__()
        self.num_layers = positive_int(num_layers, "num_layers")
        if isinstance(hidden_channels, numbers.Integral) and not isinstance(hidden_channels, bool):
            hidden_channels = [hidden_channels] * self.num_layers
        if not isinstance(hidden_channels, (tuple, list)) or len(hidden_channels) != self.num_layers:
            raise ValueError(
                f"hidden_channels must be an int or a list of num_layers={self.num_layers} ints, got {hidden_channels}"
            )
        self.hidden_channels = [positive_int(c, "hidden_channels") for c in hidden_channels]
        self.input_channels = positive_int(input_channels, "input_channels")
        self.batch_first = bool(batch_first)
        self.return_all_layers = bool(return_all_layers)
        layer_inputs = [self.input_channels] + self.hidden_channels[:-1]
        self.cells = nn.ModuleList(
            SphericalConvLSTMCell(c_in, c_hidden, kernel_rad=kernel_rad, kernel_size=kernel_size, bias=bias, conv=conv)
            for c_in, c_hidden in zip(layer_inputs, self.hidden_channels)
        )

    def forward(self, x, hidden_state=None):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        layout = "[B, T, C, H, W]" if self.batch_first else "[T, B, C, H, W]"
        if x.dim() != 5:
            raise ValueError(f"x must have shape {layout} (5 dimensions), got {x.dim()} dimensions")
        time_dim = 1 if self.batch_first else 0
        if x.shape[time_dim] == 0:
            raise ValueError(f"x must have at least one time step, got shape {tuple(x.shape)} for {layout}")
        if hidden_state is None:
            hidden_state = [None] * self.num_layers
        elif not isinstance(hidden_state, (tuple, list)) or len(hidden_state) != self.num_layers:
            raise ValueError(f"hidden_state must be None or a list of num_layers={self.num_layers} (h, c) pairs")

        steps = x.unbind(time_dim)
        sequences, last_states = [], []
        for cell, state in zip(self.cells, hidden_state):
            hidden_sequence = []
            for step in steps:
                state = cell(step, state)
                hidden_sequence.append(state[0])
            steps = hidden_sequence
            sequences.append(hidden_sequence)
            last_states.append(state)
        if not self.return_all_layers:
            sequences, last_states = sequences[-1:], last_states[-1:]
        layer_outputs = [torch.stack(sequence, dim=time_dim) for sequence in sequences]
        return layer_outputs, last_states

    def extra_repr(self):
        return (
            f"input_channels={self.input_channels}, hidden_channels={self.hidden_channels}, "
            f"num_layers={self.num_layers}, batch_first={self.batch_first}, return_all_layers={self.return_all_layers}"
        )

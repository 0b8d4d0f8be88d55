"""Spherical U-Net with a 2-layer spherical ConvLSTM at the bottleneck, for frame sequences.

The encoder and decoder are ``SphericalUNet``'s. Every frame of the sequence is encoded (all ``B * T`` frames in one
batch, so BatchNorm sees them together; the original looped over time with per-frame BatchNorm statistics), the
``[B, T, 256, H/8, W/8]`` bottleneck sequence runs through ``SphericalConvLSTM(256, 256, num_layers=2,
kernel_rad=pi, kernel_size=(8, 16))``, and the last layer's hidden state of each time step is decoded with that
frame's skips. ``use_sconvlstm=False`` swaps the LSTM's crown convolutions for their planar twins (``planar_conv``).
"""

import math

from models.baseline_unet import SphericalUNet, planar_conv
from sconv.module.convlstm import SphericalConvLSTM

__all__ = ["SphericalConvLSTMNet"]

LSTM_HIDDEN = 256
LSTM_LAYERS = 2
LSTM_KERNEL_RAD = math.pi
LSTM_KERNEL_SIZE = (8, 16)


class SphericalConvLSTMNet(SphericalUNet):
    """Saliency of frame sequences: ``SphericalUNet`` with a spherical ConvLSTM at the bottleneck.

    Args:
        input_size, use_sconv, use_spooling: as ``SphericalUNet``.
        use_sconvlstm: crown convolutions in the ConvLSTM (True) or their planar twins (False).

    Shape:
        ``forward(frames [B, T, 3, H, W], previous_maps [B, T, 1, H, W], hidden_state=None)`` returns
        ``(saliency logits [B, T, 1, H, W], hidden_state)``; ``hidden_state`` is a list (one per layer) of
        ``(h, c)`` pairs ``[B, 256, H/8, W/8]`` that continues the sequence when passed back (e.g. frame by frame).
    """

    def __init__(self, input_size=(64, 128), use_sconv=True, use_spooling=True, use_sconvlstm=True):
        super().__init__(input_size, use_sconv=use_sconv, use_spooling=use_spooling)
        self.use_sconvlstm = bool(use_sconvlstm)
        bottleneck = (self.input_size[0] // 8, self.input_size[1] // 8)
        factory = None
        if not self.use_sconvlstm:

            def factory(in_channels, out_channels):
                return planar_conv(in_channels, out_channels, LSTM_KERNEL_RAD, bottleneck, bias=True)

        self.lstm = SphericalConvLSTM(
            LSTM_HIDDEN,
            LSTM_HIDDEN,
            num_layers=LSTM_LAYERS,
            kernel_rad=LSTM_KERNEL_RAD,
            kernel_size=LSTM_KERNEL_SIZE,
            batch_first=True,
            bias=True,
            return_all_layers=True,  # every layer's last (h, c), so that a sequence can be continued
            conv=factory,
        )

    def forward(self, frames, previous_maps, hidden_state=None):
        if frames.dim() != 5:
            raise ValueError(f"frames must have shape [B, T, 3, H, W], got {tuple(frames.shape)}")
        if previous_maps.dim() != 5 or previous_maps.shape[:2] != frames.shape[:2]:
            raise ValueError(
                f"previous_maps must have shape [B, T, 1, H, W] with the frames' B, T = {tuple(frames.shape[:2])}, "
                f"got {tuple(previous_maps.shape)}"
            )
        batch, steps = frames.shape[:2]
        skips, bottleneck = self.encode(frames.flatten(0, 1), previous_maps.flatten(0, 1))
        layer_outputs, hidden_state = self.lstm(bottleneck.unflatten(0, (batch, steps)), hidden_state)
        out = self.decode(skips, layer_outputs[-1].flatten(0, 1))
        return out.unflatten(0, (batch, steps)), hidden_state

    def extra_repr(self):
        return f"{super().extra_repr()}, use_sconvlstm={self.use_sconvlstm}"

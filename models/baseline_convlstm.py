"""Spherical U-Net with a 2-layer spherical ConvLSTM, for frame sequences; the LSTM in one of two places.

``lstm_place='decoder'`` is the original's ``SconvLSTM`` (its ``models/spherical_unet.py``, trained by its
``train_lstm.py``): the LSTM runs on the decoder's ``r6`` features (64 channels at H/2 x W/2; hidden 64 and 64, crown
``r = pi``, 8 x 16 nodes), whose hidden state goes to the last decoder stage with the ``r1`` skip.
``lstm_place='bottleneck'``: the LSTM (256 and 256 hidden channels, same crown) runs on the ``[B, T, 256, H/8, W/8]``
bottleneck and its output is decoded with each frame's skips; ten times the parameters (146.6 M, 134 M in the gates).

Every frame of the sequence is encoded (all ``B * T`` frames in one batch, so BatchNorm sees them together; the
original looped over time with per-frame BatchNorm statistics). ``use_sconvlstm=False`` swaps the LSTM's crown
convolutions for their planar twins (``planar_conv``). ``conv_type='sphereconv'`` makes the LSTM's gates 3 x 3
``SphereConv`` too, as the original's ``sconv/module/convlstm.py`` did for ``--conv-type sphereconv``; a crown
``kernel_basis`` applies to the crown gates as well.
"""

import math

from models.baseline_unet import SphericalUNet, planar_conv
from sconv.module.convlstm import SphericalConvLSTM
from sconv.module.sconv import SphericalConv
from sconv.module.sphereconv import SphereConv

__all__ = ["SphericalConvLSTMNet"]

LSTM_PLACES = ("decoder", "bottleneck")
LSTM_HIDDEN = {"decoder": 64, "bottleneck": 256}  # input channels = hidden channels in both places
LSTM_SCALE = {"decoder": 2, "bottleneck": 8}  # the LSTM's grid is H / scale x W / scale
LSTM_LAYERS = 2
LSTM_KERNEL_RAD = math.pi
LSTM_KERNEL_SIZE = (8, 16)


class SphericalConvLSTMNet(SphericalUNet):
    """Saliency of frame sequences: ``SphericalUNet`` with a spherical ConvLSTM at the bottleneck.

    Args:
        input_size, use_sconv, use_spooling, conv_type, kernel_basis, upsample: as ``SphericalUNet``.
        use_sconvlstm: crown convolutions in the ConvLSTM's gates (True) or their planar twins (False); with
            ``conv_type='sphereconv'`` the gates are ``SphereConv`` and it must be left True (its default).
        lstm_place: ``'decoder'`` (the original's ``SconvLSTM``) or ``'bottleneck'`` (see the module docstring).

    Shape:
        ``forward(frames [B, T, 3, H, W], previous_maps [B, T, 1, H, W], hidden_state=None)`` returns
        ``(saliency logits [B, T, 1, H, W], hidden_state)``; ``hidden_state`` is a list (one per layer) of
        ``(h, c)`` pairs (``[B, 64, H/2, W/2]`` in the decoder, ``[B, 256, H/8, W/8]`` at the bottleneck) that continues
        the sequence when passed back (e.g. frame by frame).
    """

    def __init__(
        self,
        input_size=(64, 128),
        use_sconv=True,
        use_spooling=True,
        use_sconvlstm=True,
        lstm_place="decoder",
        conv_type=None,
        kernel_basis=None,
        upsample="nearest",
    ):
        super().__init__(
            input_size,
            use_sconv=use_sconv,
            use_spooling=use_spooling,
            conv_type=conv_type,
            kernel_basis=kernel_basis,
            upsample=upsample,
        )
        if lstm_place not in LSTM_PLACES:
            raise ValueError(f"lstm_place must be one of {LSTM_PLACES}, got {lstm_place!r}")
        if self.conv_type == "sphereconv" and not use_sconvlstm:
            raise ValueError(
                "use_sconvlstm=False (planar gates) contradicts conv_type='sphereconv', whose ConvLSTM gates are "
                "SphereConv; leave use_sconvlstm True"
            )
        self.use_sconvlstm = bool(use_sconvlstm)
        self.lstm_place = lstm_place
        scale = LSTM_SCALE[lstm_place]
        grid = (self.input_size[0] // scale, self.input_size[1] // scale)
        if self.conv_type == "sphereconv":
            self.lstm_conv_type = "sphereconv"
        else:
            self.lstm_conv_type = "sconv" if self.use_sconvlstm else "standard"

        def factory(in_channels, out_channels):
            if self.lstm_conv_type == "sphereconv":
                return SphereConv(in_channels, out_channels, kernel_size=3, bias=True)
            if self.lstm_conv_type == "standard":
                return planar_conv(in_channels, out_channels, LSTM_KERNEL_RAD, grid, bias=True)
            return SphericalConv(
                in_channels,
                out_channels,
                kernel_rad=LSTM_KERNEL_RAD,
                kernel_size=LSTM_KERNEL_SIZE,
                kernel_sr=None,
                bias=True,
                kernel_basis=kernel_basis,
                grid_size=grid,
            )

        self.lstm = SphericalConvLSTM(
            LSTM_HIDDEN[lstm_place],
            LSTM_HIDDEN[lstm_place],
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
        if self.lstm_place == "bottleneck":
            layer_outputs, hidden_state = self.lstm(bottleneck.unflatten(0, (batch, steps)), hidden_state)
            out = self.decode(skips, layer_outputs[-1].flatten(0, 1))
        else:
            r6 = self.decode_features(skips, bottleneck)
            layer_outputs, hidden_state = self.lstm(r6.unflatten(0, (batch, steps)), hidden_state)
            out = self.head(layer_outputs[-1].flatten(0, 1), skips[0])
        return out.unflatten(0, (batch, steps)), hidden_state

    def step(self, frame, previous_map, state=None):
        """One frame of a video (``[B, 3, H, W]``, ``[B, 1, H, W]``), continuing ``state``: ``(logits [B, 1, H, W],
        state)``; the interface the evaluation and the demo use."""
        out, state = self(frame[:, None], previous_map[:, None], state)
        return out[:, 0], state

    def extra_repr(self):
        return f"{super().extra_repr()}, lstm_conv_type={self.lstm_conv_type!r}, lstm_place={self.lstm_place!r}"

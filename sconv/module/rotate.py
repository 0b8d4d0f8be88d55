"""Rotation of equirectangular panoramas as a layer."""

from torch import nn

from sconv.functional.common import choice
from sconv.functional.rotate import _MODES, _check_rotation, rotate_equirect

__all__ = ["EquirectRotate"]


class EquirectRotate(nn.Module):
    """Rotate panoramas on the sphere (see :func:`sconv.functional.rotate.rotate_equirect`).

    Args:
        rotation: optional fixed ``[3, 3]`` (or ``[B, 3, 3]``) rotation, kept as a buffer; ``forward`` may pass one
            instead.
        mode: ``'bilinear'`` or ``'nearest'``.

    Shape:
        ``forward(input [B, C, H, W], rotation=None) -> [B, C, H, W]``.
    """

    def __init__(self, rotation=None, mode="bilinear"):
        super().__init__()
        self.mode = choice(mode, "mode", _MODES)
        if rotation is not None:
            _check_rotation(rotation)
            rotation = rotation.detach().clone()
        self.register_buffer("rotation", rotation)

    def forward(self, input, rotation=None):
        if rotation is None:
            rotation = self.rotation
        if rotation is None:
            raise ValueError("rotation is required: give it to EquirectRotate(rotation=...) or to forward")
        return rotate_equirect(input, rotation, self.mode)

    def extra_repr(self):
        fixed = "None" if self.rotation is None else f"[{', '.join(map(str, self.rotation.shape))}]"
        return f"rotation={fixed}, mode={self.mode!r}"

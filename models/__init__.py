"""The paper's saliency networks: ``SphericalUNet`` (single frames) and ``SphericalConvLSTMNet`` (sequences)."""

from models.baseline_convlstm import SphericalConvLSTMNet
from models.baseline_unet import SphericalUNet, crown_tap_count, planar_conv, planar_kernel_size

__all__ = ["SphericalUNet", "SphericalConvLSTMNet", "crown_tap_count", "planar_conv", "planar_kernel_size"]

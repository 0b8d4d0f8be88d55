"""Spherical layers: thin ``nn.Module`` wrappers over ``sconv.functional``."""

from sconv.module.convlstm import SphericalConvLSTM, SphericalConvLSTMCell
from sconv.module.sconv import SphericalConv
from sconv.module.smse import SphereMSE
from sconv.module.spad import SphericalPad
from sconv.module.sphereconv import SphereConv
from sconv.module.spool import SphericalPooling

__all__ = [
    "SphericalConv",
    "SphereConv",
    "SphericalPad",
    "SphericalPooling",
    "SphereMSE",
    "SphericalConvLSTMCell",
    "SphericalConvLSTM",
]

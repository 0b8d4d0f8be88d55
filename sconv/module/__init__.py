"""Spherical layers: thin ``nn.Module`` wrappers over ``sconv.functional``."""

from sconv.module.convlstm import SphericalConvLSTM, SphericalConvLSTMCell
from sconv.module.rotate import EquirectRotate
from sconv.module.sconv import SphericalConv
from sconv.module.smse import SphereMSE
from sconv.module.spad import SphericalPad
from sconv.module.sphereconv import SphereConv
from sconv.module.spool import SphericalPooling
from sconv.module.upsample import SphericalUpsample

__all__ = [
    "SphericalConv",
    "SphereConv",
    "SphericalPad",
    "SphericalPooling",
    "SphericalUpsample",
    "EquirectRotate",
    "SphereMSE",
    "SphericalConvLSTMCell",
    "SphericalConvLSTM",
]

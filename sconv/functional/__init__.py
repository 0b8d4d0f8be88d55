"""Functional spherical operators (the math); see ``sconv.module`` for the layers holding parameters."""

from sconv.functional.common import pixel_solid_angle, quadrature_weight
from sconv.functional.rotate import rotate_equirect, rotate_points, rotation_matrix
from sconv.functional.sconv import spherical_conv
from sconv.functional.smse import sphere_mse
from sconv.functional.spad import spherical_pad
from sconv.functional.spool import spherical_pool
from sconv.functional.upsample import spherical_upsample

__all__ = [
    "spherical_conv",
    "spherical_pad",
    "spherical_pool",
    "spherical_upsample",
    "sphere_mse",
    "rotate_equirect",
    "rotate_points",
    "rotation_matrix",
    "pixel_solid_angle",
    "quadrature_weight",
]

"""Functional spherical operators (the math); see ``sconv.module`` for the layers holding parameters."""

from sconv.functional.sconv import spherical_conv

__all__ = ["spherical_conv"]

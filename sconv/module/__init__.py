"""Spherical layers: thin ``nn.Module`` wrappers over ``sconv.functional``."""

from sconv.module.sconv import SphericalConv

__all__ = ["SphericalConv"]

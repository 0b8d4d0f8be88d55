"""sconv: spherical operators on equirectangular tensors (spherical crown convolution, padding, pooling, MSE)."""

from sconv import functional, module

__version__ = "0.1.0"
__all__ = ["functional", "module", "__version__"]

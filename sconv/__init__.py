"""sconv: spherical operators on equirectangular tensors (spherical crown convolution, padding, pooling, MSE,
ConvLSTM) and sphere-weighted saliency metrics."""

from sconv import functional, metrics, module

__version__ = "0.1.0"
__all__ = ["functional", "metrics", "module", "__version__"]

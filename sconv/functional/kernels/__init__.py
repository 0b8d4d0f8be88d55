"""The Triton kernels of ``spherical_conv``'s CUDA paths, one module per formulation plus the layout passes.

The submodules hold only ``@triton.jit`` code and import triton: they are imported by the launchers
(``sconv.functional.conv_gather``, ``conv_sparse``, ``conv_layout``) only where triton is installed.
"""

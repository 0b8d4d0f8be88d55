"""The cost model that picks ``spherical_conv``'s formulation per call (gather, mix_first or project_first).

Their costs differ by orders of magnitude between a small crown with many kernel nodes and a large crown with few, so
each call counts each formulation's dense-GEMM multiply-adds plus its other work weighted by constants, in GEMM
multiply-add equivalents, and runs the cheapest. The weights are data (``conv_costs.json``, next to this module), fitted
to timings of all three formulations: on the CPU ("gathered": an element gathered from the input by the gather path,
"kernel": an element of its effective kernel E built by 4-corner gathers) and on CUDA per compute dtype ("triton": a
multiply-add of the Triton gather kernels against cuBLAS's); on both, "sparse": a multiply-add of the crown sum, and
"expanded": an element of the node-expanded intermediate (U of mix_first, Z of project_first).
``benchmarks/refit_cost_model.py`` refits the CUDA weights from the forced-path measurement and checks the shipped
ones against it.
"""

import functools
import json
import os

import torch

from sconv.functional.crown import conv_window, crown_taps, padded_taps

__all__ = ["choose_path", "path_costs", "COSTS", "PATHS"]

PATHS = ("gather", "mix_first", "project_first")
COSTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_costs.json")
with open(COSTS_FILE, encoding="utf-8") as _file:
    COSTS = json.load(_file)

# Largest effective kernel E [taps, C_out, C_in] the Triton path builds (elements).
TRITON_MAX_KERNEL = 2**30
# Largest sparse matrix (nonzeros) the sparse formulations build: on the CPU a memory bound; on CUDA where the crown sum
# stops paying (past it the gather path was faster on every case measured).
MAX_NONZEROS = 2**27
CUDA_MAX_NONZEROS = 2**25


def path_costs(
    batch, channels, out_channels, height, width, kernel_rad, stride, kernel_size, triton_dtype=None, input_grad=True,
    wrapped=True, costs=None,
):  # fmt: skip
    """Each formulation's cost for this call, as ``{path: cost}``; only ``gather`` where the sparse matrix would exceed
    its cap. ``costs``: the weights of one device (``COSTS["cpu"]`` or ``COSTS["cuda"][family]``), by default the
    shipped ones; the other arguments as ``choose_path``'s."""
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    out_h, out_w = geom.out_size
    window = conv_window(geom, width, stride[1])
    in_pixels = height * (width if wrapped else width + window.pad_left + window.pad_right)
    nodes = kernel_size[0] * kernel_size[1]
    taps = len(geom.in_row)
    nonzeros = 4 * taps * out_w
    batch = max(batch, 1)
    mix_lanes, project_lanes, project_rebuilds = batch * out_channels, batch * channels, 1.0
    if costs is None:
        costs = COSTS["cpu"] if triton_dtype is None else COSTS["cuda"][dtype_family(triton_dtype)]
    if triton_dtype is not None:
        # The CSR kernel's programs cost about the same below min_lanes (image, channel) lanes; project_first rebuilds
        # Z in the backward pass: three crown sums instead of two when the input needs a gradient.
        min_lanes = COSTS["cuda"]["min_lanes"]
        mix_lanes, project_lanes = max(mix_lanes, min_lanes), max(project_lanes, min_lanes)
        project_rebuilds = 1.5 if input_grad else 1.0
    cost = {
        "mix_first": batch * in_pixels * nodes * out_channels * (channels + costs["expanded"])
        + costs["sparse"] * nonzeros * mix_lanes,
        "project_first": batch * out_h * out_w * nodes * channels * out_channels
        + project_rebuilds * (batch * out_h * out_w * nodes * channels * costs["expanded"])
        + project_rebuilds * costs["sparse"] * nonzeros * project_lanes,
    }
    if triton_dtype is None:
        padded = padded_taps(height, width, kernel_rad, stride, kernel_size)
        cost["gather"] = (
            batch * channels * padded * out_w * (out_channels + costs["gathered"])
            + costs["kernel"] * 4 * padded * channels * out_channels
        )
    else:
        # Three kernels of equal work, each tiling one channel axis in blocks of at least 16 (tl.dot's smallest):
        # C_out in the forward and grad-E kernels, C_in in the grad-input one (skipped when the input needs no
        # gradient). E is built by one GEMM over the kernel nodes.
        rounded_in, rounded_out = -(-channels // 16) * 16, -(-out_channels // 16) * 16
        work = (2 * channels * rounded_out + (rounded_in * out_channels if input_grad else 0)) / 3
        cost["gather"] = costs["triton"] * batch * out_w * taps * work + taps * nodes * channels * out_channels
        if taps * channels * out_channels > TRITON_MAX_KERNEL:
            cost["gather"] = float("inf")
    if nonzeros > (MAX_NONZEROS if triton_dtype is None else CUDA_MAX_NONZEROS):
        return {"gather": cost["gather"]}
    return cost


def dtype_family(dtype):
    """The key of the CUDA weights for a compute dtype: ``"float32"`` or ``"16bit"``."""
    return "float32" if dtype == torch.float32 else "16bit"


@torch.compiler.disable  # plain Python over cached geometry: under torch.compile, run it as is, not traced
@functools.lru_cache(maxsize=1024)
def choose_path(
    batch, channels, out_channels, height, width, kernel_rad, stride, kernel_size, triton_dtype=None, input_grad=True,
    wrapped=True,
):  # fmt: skip
    """The cheapest formulation for this call: ``"gather"``, ``"mix_first"`` or ``"project_first"``.

    ``triton_dtype``: the compute dtype when the formulations would run as Triton kernels (CUDA), else None.
    ``input_grad``: whether the input's gradient will be needed (a network's first layer: not).
    ``wrapped``: whether the sparse formulations read the input unpadded (padding mode "sphere").
    """
    cost = path_costs(
        batch, channels, out_channels, height, width, kernel_rad, stride, kernel_size, triton_dtype, input_grad, wrapped
    )
    return min(cost, key=cost.get)

"""Launching the Triton kernels of ``sconv`` for less host time than ``kernel[grid](...)``.

On every call Triton's launcher binds the arguments and works out what the kernel is specialised on (each integer's
width and divisibility by 16, each pointer's dtype and 16-byte alignment), then looks the compiled kernel up: about
33 us of host time per launch on the GPU machine (H100 host, Triton 3.6), for kernels that run for a few dozen us in
a small layer. ``launch`` does that lookup through Triton once per distinct key, which over-approximates Triton's
(the kernel, its constexpr and launch options, every non-tensor argument by value, each tensor's dtype and whether
its address is a multiple of 16), keeps the compiled kernel Triton returned, and afterwards calls that kernel's
launcher directly. Two calls with the same key get the same specialisation from Triton, so the direct call runs the
kernel Triton would have run.

Triton's own path runs instead on Triton versions this was not checked on, under the interpreter, and while launch
hooks (profilers) are set.
"""

import os

import torch

try:
    import triton
    from triton import knobs
    from triton.runtime import driver
except ImportError:  # CPU-only installs: nothing is launched
    triton = None

__all__ = ["launch"]

# Triton versions whose compiled-kernel launcher (``CompiledKernel.run``) takes the arguments as called below.
CHECKED_VERSIONS = ((3, 6),)
MAX_ENTRIES = 4096


def _direct_launch_supported():
    if triton is None or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False
    return tuple(int(part) for part in triton.__version__.split(".")[:2]) in CHECKED_VERSIONS


DIRECT = _direct_launch_supported()
_compiled = {}


def specialization_key(arg):
    """What a launch argument contributes to the key: a tensor its dtype and 16-byte alignment, anything else (ints,
    floats, bools, strings) its type and value."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    return type(arg), arg


def launch(kernel, grid, *args, **options):
    """``kernel[grid](*args, **options)``: ``args`` the kernel's runtime arguments in order, ``options`` its
    constexpr arguments (which follow them in its signature) and launch options (``num_warps``, ``num_stages``)."""
    if not DIRECT or knobs.runtime.launch_enter_hook is not None or knobs.runtime.launch_exit_hook is not None:
        kernel[grid](*args, **options)
        return
    device = driver.active.get_current_device()
    key = (kernel, device, tuple(map(specialization_key, args)), tuple(options.items()))
    entry = _compiled.get(key)
    if entry is None:
        compiled = kernel[grid](*args, **options)
        constants = kernel.arg_names[len(args) :]
        if compiled is not None and all(name in options for name in constants):
            if len(_compiled) >= MAX_ENTRIES:
                _compiled.clear()
            values = tuple(options[name] for name in constants)
            _compiled[key] = (compiled.run, compiled.function, compiled.packed_metadata, values)
        return
    run, function, metadata, constants = entry
    grid_x, grid_y, grid_z = (*grid, 1, 1)[:3]
    stream = driver.active.get_current_stream(device)
    # (grid, stream, function, packed metadata, launch metadata, enter hook, exit hook, every argument in signature
    # order): what Triton's JITFunction.run passes, hooks being None here.
    run(grid_x, grid_y, grid_z, stream, function, metadata, None, None, None, *args, *constants)

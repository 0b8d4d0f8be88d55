"""The plans of ``spherical_conv``'s formulations: the geometry of ``sconv.functional.crown`` laid out as each one reads
it, built once per configuration and cached.

- ``gather_plan``: the CPU gather path's (``crown.conv_plan``), refused up front where it would not fit in memory;
- ``sparse_plan``: the sparse formulations' CSR matrices (``crown.sparse_plan``);
- ``triton_plan``: the Triton gather kernels' int32 tables (``TritonPlan``), and the launch tables of their backward
  kernels (``kernel_grad_blocks``, ``input_grad_blocks``).

All are plain Python over cached geometry: under ``torch.compile`` they are fetched eagerly, not traced.
"""

import functools
import os
from dataclasses import dataclass

import torch

from sconv.functional.crown import conv_plan, conv_window, crown_taps, padded_taps
from sconv.functional.crown import sparse_plan as _crown_sparse_plan

__all__ = ["gather_plan", "sparse_plan", "TritonPlan", "triton_plan", "kernel_grad_blocks", "input_grad_blocks"]

sparse_plan = torch.compiler.disable(_crown_sparse_plan)


def _physical_memory():
    """Bytes of memory of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


@torch.compiler.disable
def gather_plan(input, kernel_rad, stride, kernel_size):
    """``conv_plan`` for the CPU gather path, refused with the memory it needs when that exceeds the machine's.

    The plan holds an index per (tap, output column) and the path gathers the input under each of them, so a large
    crown on a large grid (1024 x 2048 at pi/32, 128 x 256 at pi) needs tens or hundreds of GB; such a call is refused
    up front rather than attempted.
    """
    batch, channels, height, width = input.shape
    gathered = padded_taps(height, width, kernel_rad, stride, kernel_size) * (width // stride[1])
    need = gathered * (8 + max(batch, 1) * channels * input.element_size())  # int64 index + gathered input
    available = _physical_memory()
    if available is not None and need > available:
        raise ValueError(
            f"spherical_conv: a {height}x{width} input with {channels} channel(s), batch {batch}, stride {stride} and "
            f"kernel_rad={kernel_rad:.6g} needs about {need / 2**30:.1f} GiB on the CPU (the crown's gather index and "
            f"the gathered input), more than this machine's {available / 2**30:.1f} GiB; use a smaller kernel_rad or "
            "input, a larger stride, or a CUDA device"
        )
    return conv_plan(height, width, kernel_rad, stride, kernel_size, input.device, input.dtype)


@dataclass(frozen=True, eq=False)
class TritonPlan:
    """``crown_taps`` as the kernels read it (int32 device tensors; T taps, H input rows, H' output rows).

    Attributes:
        window: the width padding (``ConvWindow``); ``padded_w`` the padded width Wp.
        row_ptr: ``[H' + 1]``, taps of output row i are ``row_ptr[i]:row_ptr[i + 1]``; ``row_order`` ``[H']``
            output rows by decreasing tap count (launch order).
        tap_row: ``[T]`` output row of each tap; ``tap_base``: ``[T]`` position ``row_t Wp + col_t`` in the padded
            input plane of the tap's value for output column 0.
        in_taps: ``[T]`` the taps grouped by input row, by column within a row (the input-gradient kernel's
            "entries"); ``in_ptr`` ``[H + 1]`` the groups. ``entry_row`` / ``entry_column``: ``[T]`` each entry's
            output row and padded input column for output column 0, so that the kernel reads them, and E (built
            from ``entry_nodes``), directly by entry rather than through ``in_taps``; ``tap_entry`` ``[T]`` the
            entry of each tap (the inverse of ``in_taps``).
        nodes: ``[T, kh kw]`` float32, each tap's coefficient on each kernel node; ``entry_nodes`` the same in entry
            order.
        entry_input_column: ``[T]`` each entry's column in the unpadded input for output column 0,
            ``(entry_column - pad_left) mod W``: the input-gradient kernels read it when the padding around the
            sphere is theirs to fold (``wrapped``).
        host: ``row_ptr``, ``in_ptr`` and ``entry_column`` on the CPU (int64), for the launch tables.
    """

    window: object
    padded_w: int
    row_ptr: torch.Tensor
    row_order: torch.Tensor
    tap_row: torch.Tensor
    tap_base: torch.Tensor
    in_taps: torch.Tensor
    in_ptr: torch.Tensor
    entry_row: torch.Tensor
    entry_column: torch.Tensor
    tap_entry: torch.Tensor
    nodes: torch.Tensor
    entry_nodes: torch.Tensor
    entry_input_column: torch.Tensor
    host: dict

    def input_columns(self, wrapped):
        """Each entry's column for output column 0 as the input-gradient kernels read it: in the unpadded input when
        they fold the padding around the sphere themselves (``wrapped``), else in the padded one."""
        return self.entry_input_column if wrapped else self.entry_column


@functools.lru_cache(maxsize=256)
def triton_plan(height, width, kernel_rad, stride, kernel_size, device):
    """The ``TritonPlan`` of one configuration on ``device``; cached."""
    geom = crown_taps(height, width, kernel_rad, stride, kernel_size)
    window = conv_window(geom, width, stride[1])
    padded_w = width + window.pad_left + window.pad_right
    out_h = geom.out_size[0]
    taps = len(geom.in_row)
    if height * padded_w >= 2**31:
        raise ValueError(f"a {height}x{width} input with kernel_rad={kernel_rad:.6g} is too large for the int32 plan")
    counts = geom.taps_per_row()
    tap_row = torch.repeat_interleave(torch.arange(out_h), counts)
    tap_base = geom.in_row * padded_w + window.start + (geom.col_offset - window.d_min)
    in_taps = torch.argsort(tap_base, stable=True)  # by input row, then by column
    entry_column = tap_base[in_taps] % padded_w
    in_ptr = torch.zeros(height + 1, dtype=torch.long)
    in_ptr[1:] = torch.cumsum(torch.bincount(geom.in_row, minlength=height), 0)
    nodes = torch.zeros(taps, kernel_size[0] * kernel_size[1], dtype=torch.float64)
    nodes.index_put_((torch.arange(taps)[:, None].expand(-1, 4), geom.node), geom.coef, accumulate=True)
    host = dict(row_ptr=geom.row_ptr, in_ptr=in_ptr, entry_column=entry_column)

    def dev(t):
        return t.to(device=device, dtype=torch.int32)

    return TritonPlan(
        window=window,
        padded_w=padded_w,
        row_ptr=dev(geom.row_ptr),
        row_order=dev(torch.argsort(counts, descending=True, stable=True)),
        tap_row=dev(tap_row),
        tap_base=dev(tap_base),
        in_taps=dev(in_taps),
        in_ptr=dev(in_ptr),
        entry_row=dev(tap_row[in_taps]),
        entry_column=dev(entry_column),
        tap_entry=dev(torch.argsort(in_taps)),
        nodes=nodes.to(device=device, dtype=torch.float32),
        entry_nodes=nodes[in_taps].to(device=device, dtype=torch.float32),
        entry_input_column=dev((entry_column - window.pad_left) % width),
        host=host,
    )


@functools.lru_cache(maxsize=256)
def kernel_grad_blocks(plan, channels, block_n):
    """Blocks of ``block_n`` consecutive k = t C + c within one output row: ``(row, first k)`` per block, int32."""
    k_ptr = plan.host["row_ptr"] * channels
    blocks = -(-k_ptr.diff() // block_n)
    rows = torch.repeat_interleave(torch.arange(len(blocks)), blocks)
    first = k_ptr[rows] + (torch.arange(len(rows)) - (torch.cumsum(blocks, 0) - blocks)[rows]) * block_n
    device = plan.row_ptr.device
    return rows.to(device, torch.int32), first.to(device, torch.int32)


@functools.lru_cache(maxsize=256)
def input_grad_blocks(plan, height, out_w, stride_w, block_q, wrapped):
    """Blocks of ``block_q`` columns of one input row, with the range of ``in_taps`` (entries) that reach them.

    ``wrapped``: the columns are the unpadded input's, and every entry of the row reaches each block (an entry reads
    ``W'`` columns ``s_w`` apart around the whole circle). Otherwise they are padded columns: a tap whose output
    column 0 reads padded column ``cb`` reaches columns ``cb .. cb + s_w (W' - 1)``; the taps of a row are sorted by
    ``cb``, so those reaching a block are a contiguous range. Blocks come heaviest first.
    """
    padded_w = plan.padded_w
    in_ptr = plan.host["in_ptr"]
    n_cols = padded_w - plan.window.pad_left - plan.window.pad_right if wrapped else padded_w
    n_qb = -(-n_cols // block_q)
    q = torch.arange(height).repeat_interleave(n_qb)
    first_col = torch.arange(n_qb).repeat(height) * block_q
    lo, hi = in_ptr[q], in_ptr[q + 1]
    if not wrapped:
        # Sort key (row, cb) is increasing over all entries (cb sorted within each input row): search in it once for
        # every block.
        key = torch.repeat_interleave(torch.arange(height), in_ptr.diff()) * (2 * padded_w) + plan.host["entry_column"]
        lo = torch.maximum(lo, torch.searchsorted(key, q * (2 * padded_w) + first_col - stride_w * (out_w - 1)))
        hi = torch.minimum(hi, torch.searchsorted(key, q * (2 * padded_w) + first_col + block_q))
    order = torch.argsort(hi - lo, descending=True, stable=True)
    device = plan.row_ptr.device
    return tuple(t[order].to(device, torch.int32) for t in (q, first_col, lo, hi))

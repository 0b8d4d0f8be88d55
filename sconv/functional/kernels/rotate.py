"""Triton kernel of ``rotate_equirect``: one pass from output pixel to rotated direction, source pixel coordinates and
the bilinear (or nearest) sample on the sphere, every channel of one batch item per program.

Only ``@triton.jit`` code: the launcher and the rule that picks this path are in ``sconv.functional.rotate``, whose
docstring gives the frame and the sampling rule this kernel follows (the one of ``sample_plan``). This module imports
triton: import it only where triton is installed.
"""

import triton
import triton.language as tl

PI = tl.constexpr(3.141592653589793)


@triton.jit
def atan2(y, x, c3, c5, c7, c9, c11):
    """``atan2(y, x)`` in float32, in ``[-pi, pi]`` (libdevice's is not available in Triton's interpreter).

    ``t = min(|x|, |y|) / max(|x|, |y|)`` in ``[0, 1]``, reduced to ``|u| <= tan(pi / 8)`` by
    ``atan(t) = pi / 4 + atan((t - 1) / (t + 1))``; ``atan(u) = u + c3 u^3 + ... + c11 u^11`` (coefficients fitted
    by the launcher), then the octant is restored."""
    ax = tl.abs(x)
    ay = tl.abs(y)
    big = tl.maximum(ax, ay)
    t = tl.minimum(ax, ay) / tl.where(big > 0, big, 1.0)  # atan2(0, 0) = 0
    reduce = t > 0.41421356237309503
    u = tl.where(reduce, (t - 1.0) / (t + 1.0), t)
    u2 = u * u
    a = u + u * u2 * (c3 + u2 * (c5 + u2 * (c7 + u2 * (c9 + u2 * c11))))
    a = tl.where(reduce, PI / 4 + a, a)
    a = tl.where(ay > ax, PI / 2 - a, a)
    a = tl.where(x < 0, PI - a, a)
    return tl.where(y < 0, -a, a)


@triton.jit
def sample_row(x_row_ptr, r, col, height, width, mask):
    """Values at continuous column ``col`` of padded row ``r`` (row ``-1 - k`` is row ``k`` and row ``height + k``
    row ``height - 1 - k``, half a turn away), linear in longitude, columns wrapping around."""
    above = r < 0
    below = r >= height
    in_row = tl.where(above, -1 - r, tl.where(below, 2 * height - 1 - r, r))
    shifted = tl.where(above | below, col + 0.5 * width, col)
    left_f = tl.floor(shifted)
    frac = shifted - left_f
    left = left_f.to(tl.int32) % width
    left = tl.where(left < 0, left + width, left)
    right = tl.where(left + 1 == width, 0, left + 1)
    base = in_row.to(tl.int64) * width
    v_left = tl.load(x_row_ptr + base + left, mask=mask, other=0.0).to(tl.float32)
    v_right = tl.load(x_row_ptr + base + right, mask=mask, other=0.0).to(tl.float32)
    return v_left + frac * (v_right - v_left)


@triton.jit
def rotate_equirect_kernel(
    x_ptr, out_ptr, rot_ptr, rot_batch_stride, n_c, height, width,
    c3, c5, c7, c9, c11,
    BLOCK: tl.constexpr, NEAREST: tl.constexpr,
):  # fmt: skip
    # A program: BLOCK output pixels of batch item b (contiguous [B, C, H, W]), all channels.
    b = tl.program_id(1).to(tl.int64)
    hw = height * width
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < hw
    i = offs // width
    j = offs - i * width
    theta = (i.to(tl.float32) + 0.5) * (PI / height)
    phi = (j.to(tl.float32) + 0.5) * (2 * PI / width)
    sin_theta = tl.sin(theta)
    px = -sin_theta * tl.cos(phi)
    py = -sin_theta * tl.sin(phi)
    pz = tl.cos(theta)
    # Source direction q = R^T p: q_k = sum_m R[m, k] p_m.
    rot = rot_ptr + b * rot_batch_stride
    qx = tl.load(rot + 0) * px + tl.load(rot + 3) * py + tl.load(rot + 6) * pz
    qy = tl.load(rot + 1) * px + tl.load(rot + 4) * py + tl.load(rot + 7) * pz
    qz = tl.load(rot + 2) * px + tl.load(rot + 5) * py + tl.load(rot + 8) * pz
    src_theta = atan2(tl.sqrt(qx * qx + qy * qy), qz, c3, c5, c7, c9, c11)
    src_phi = atan2(-qy, -qx, c3, c5, c7, c9, c11)
    src_phi = tl.where(src_phi < 0, src_phi + 2 * PI, src_phi)
    row = src_theta * (height / PI) - 0.5
    col = src_phi * (width / (2 * PI)) - 0.5
    if NEAREST:
        cell_row = tl.minimum(tl.maximum(tl.floor(row + 0.5).to(tl.int32), 0), height - 1)
        cell_col = tl.floor(col + 0.5).to(tl.int32) % width
        cell_col = tl.where(cell_col < 0, cell_col + width, cell_col)
        source = cell_row.to(tl.int64) * width + cell_col
        for c in range(n_c):
            plane = (b * n_c + c) * hw
            value = tl.load(x_ptr + plane + source, mask=mask, other=0.0)
            tl.store(out_ptr + plane + offs, value, mask=mask)
    else:
        top_f = tl.floor(row)
        row_frac = row - top_f
        top = top_f.to(tl.int32)
        for c in range(n_c):
            plane = (b * n_c + c) * hw
            upper = sample_row(x_ptr + plane, top, col, height, width, mask)
            lower = sample_row(x_ptr + plane, top + 1, col, height, width, mask)
            value = upper + row_frac * (lower - upper)
            tl.store(out_ptr + plane + offs, value.to(out_ptr.dtype.element_ty), mask=mask)

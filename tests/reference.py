"""Slow, direct float64 evaluations of the spec's formulas, written for clarity and nothing else.

Every loop here follows ``docs/spec.md`` word for word, with NumPy and explicit rotation matrices,
and shares no code with ``sconv``: the fast ops are tested against these.
"""

import math

import numpy as np


def grid(h, w):
    theta = (np.arange(h) + 0.5) * math.pi / h
    phi = (np.arange(w) + 0.5) * 2 * math.pi / w
    return theta, phi


def unit(theta, phi):
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1)


def rot_y(t):
    return np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])


def rot_z(f):
    return np.array([[math.cos(f), -math.sin(f), 0], [math.sin(f), math.cos(f), 0], [0, 0, 1]])


def kernel_value(weight_oc, alpha, beta, rho, r):
    """K(alpha, beta): bilinear interpolation of weight_oc [kh, kw] over the spec's nodes."""
    kh, kw = weight_oc.shape

    def along_alpha(column):  # linear in alpha over nodes a r / (kh - 1), alpha clipped to r
        if kh == 1:
            return column[0]
        pos = min(alpha, r) / (r / (kh - 1))
        a0 = min(int(math.floor(pos)), kh - 2)
        f = pos - a0
        return (1 - f) * column[a0] + f * column[a0 + 1]

    if rho < 1e-9:
        return np.mean([along_alpha(weight_oc[:, b]) for b in range(kw)])
    pos = beta / (2 * math.pi / kw)
    b0 = int(math.floor(pos))
    f = pos - b0
    return (1 - f) * along_alpha(weight_oc[:, b0 % kw]) + f * along_alpha(weight_oc[:, (b0 + 1) % kw])


def spherical_conv(x, weight, bias=None, stride=(1, 1), padding_mode="sphere", r=math.pi / 3):
    """Direct evaluation of y[n, o, p] for every output pixel p: numpy float64 in, numpy float64 out."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n, c, h, w = x.shape
    o = weight.shape[0]
    sh, sw = stride
    ho, wo = h // sh, w // sw
    theta_in, phi_in = grid(h, w)
    theta_out, phi_out = grid(ho, wo)
    tq, pq = np.meshgrid(theta_in, phi_in, indexing="ij")
    uq = unit(tq, pq).reshape(-1, 3)
    rows = np.repeat(np.arange(h), w)
    cols = np.tile(np.arange(w), h)
    y = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            rp = rot_z(phi_out[j]) @ rot_y(theta_out[i])
            v = uq @ rp  # rows are R_p^T u(q)
            rho = np.sqrt(v[:, 0] ** 2 + v[:, 1] ** 2)
            alpha = np.arctan2(rho, v[:, 2])
            beta = np.mod(np.arctan2(v[:, 1], v[:, 0]), 2 * math.pi)
            members = np.nonzero(alpha <= r + 1e-9)[0]
            wq = np.sin(theta_in[rows[members]])
            jp = sw * j + (sw - 1) // 2
            vals = np.zeros((n, c, len(members)))
            for k, q in enumerate(members):
                if padding_mode == "sphere":
                    vals[:, :, k] = x[:, :, rows[q], cols[q]]
                    continue
                dc = (cols[q] - jp) % w
                if dc >= math.ceil(w / 2):
                    dc -= w
                col = jp + dc
                if 0 <= col < w:
                    vals[:, :, k] = x[:, :, rows[q], col]
                elif padding_mode == "reflect":
                    vals[:, :, k] = x[:, :, rows[q], -col if col < 0 else 2 * (w - 1) - col]
                elif padding_mode == "replicate":
                    vals[:, :, k] = x[:, :, rows[q], min(max(col, 0), w - 1)]
                else:
                    vals[:, :, k] = 0.0 if padding_mode == "zeros" else float(padding_mode)
            for oo in range(o):
                for cc in range(c):
                    kv = np.array(
                        [kernel_value(weight[oo, cc], alpha[q], beta[q], rho[q], r) for q in members]
                    )
                    y[:, oo, i, j] += vals[:, cc, :] @ (kv * wq) / wq.sum()
            if bias is not None:
                y[:, :, i, j] += np.asarray(bias, dtype=np.float64)
    return y

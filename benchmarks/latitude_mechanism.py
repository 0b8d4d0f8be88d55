"""Why the paper's crown kernels carry less from the equator to the poles than they could (issue 22, docs/latitude.md).

Two measurements that need no training:

1. ``coverage``: for every crown layer of the Spherical U-Net on an ``H x W`` input, per latitude band:
   - ``touched``: the share of kernel nodes that receive interpolation weight from some tap of a row's crown (mean
     over the band's rows);
   - ``unseen``: the share of a row's interpolation energy that falls on kernel directions no row of the training band
     (|latitude| < 20 degrees) constrains. With ``A_i`` the interpolation matrix of row ``i`` (its effective kernel is
     ``A_i w``), the loss gradient of ``w`` from training-band data lies in the row space of the stacked ``A_i`` of
     that band; the rest of ``w`` (its null space ``N``) never moves from its initial value, yet row ``i`` reads it
     with weight ``||A_i P_N||^2 / ||A_i||^2``. That share is "unseen".
2. ``meridian``: one untrained layer (3 -> 16 channels, three initialisations) applied to a structured tangent
   pattern carried along a meridian from the equator to 70 degrees; its response is read back in the pattern's own
   tangent coordinates and correlated with the response at the equator (1: the layer sees the pattern the same way).
   With ``--trained``, the same for the first layer of networks trained by the latitude benchmark, and with
   ``--stages`` for every stage of those networks (``stage_meridian``): each convolution's output before and after
   its BatchNorm + ReLU, down to the bottleneck and back up to the logits.

    python benchmarks/latitude_mechanism.py --out DIR [--sizes 32x64 64x128 128x256]
    python benchmarks/latitude_mechanism.py --out DIR --trained RUN/models/*.pt [--stages]

Writes ``DIR/mechanism.json`` and prints markdown tables.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.latitude_generalisation import (  # noqa: E402
    gnomonic,
    load_trained,
    parse_size,
    shape_bitmaps,
    sphere_directions,
)
from datasets.data import atomic_write_bytes  # noqa: E402
from models.baseline_unet import DECODER, ENCODER, LongitudeCircularConv2d, planar_kernel_size  # noqa: E402
from sconv.functional.common import colatitudes, longitudes  # noqa: E402
from sconv.functional.crown import (  # noqa: E402
    crown_taps,
    equator_kernel_basis,
    row_interpolation_matrix,
    smooth_kernel_basis,
)
from sconv.functional.sphereconv import convolve_taps, longitude_prefilter, tap_grid  # noqa: E402
from sconv.module.sconv import SphericalConv  # noqa: E402
from sconv.module.sphereconv import SphereConv  # noqa: E402

BANDS = ((0, 20), (20, 45), (45, 70), (70, 90))
TRAIN_BAND = 20.0


def row_latitudes(height):
    return (90 - colatitudes(height) * (180 / math.pi)).abs()


def coverage(height, width, kernel_rad, kernel_size, basis=None):
    """Per band: mean ``touched`` node share and mean ``unseen`` energy share (see the module docstring) of a stride-1
    crown layer; ``basis [kh kw, m]`` restricts the kernel to ``w = B c`` (then ``touched`` is not defined: None)."""
    geom = crown_taps(height, width, kernel_rad, (1, 1), kernel_size)
    nodes = kernel_size[0] * kernel_size[1]
    matrices = [row_interpolation_matrix(geom, i, width, nodes) for i in range(height)]
    if basis is not None:
        matrices = [m @ basis for m in matrices]
    lat = row_latitudes(height)
    train = [i for i in range(height) if lat[i] < TRAIN_BAND] or [int(lat.argmin())]
    _, singular, vh = torch.linalg.svd(torch.cat([matrices[i] for i in train]), full_matrices=True)
    rank = int((singular > 1e-9 * singular[0]).sum())
    null = vh[rank:].T
    result = {"parameters_per_channel_pair": matrices[0].shape[1], "train_rank": rank, "touched": [], "unseen": []}
    for low, high in BANDS:
        rows = [i for i in range(height) if low <= lat[i] < high]
        if not rows:
            result["touched"].append(None)
            result["unseen"].append(None)
            continue
        unseen = [float((matrices[i] @ null).pow(2).sum() / matrices[i].pow(2).sum()) for i in rows]
        result["unseen"].append(sum(unseen) / len(rows))
        touched = (
            None
            if basis is not None
            else sum(float((matrices[i].abs().sum(0) > 0).double().mean()) for i in rows) / len(rows)
        )
        result["touched"].append(touched)
    return result


def layer_coverage(size):
    """``coverage`` of every crown layer of the U-Net at input ``size``, for the paper's free nodes, the
    ``resolved`` and ``smooth`` bases, and (3, 6) free nodes."""
    height, width = size
    out = {}
    for name, _, _, kernel_rad, kernel_size, scale in ENCODER + DECODER:
        grid = (height // scale, width // scale)
        out[name] = {
            "kernel_rad": kernel_rad,
            "grid": grid,
            "paper": coverage(*grid, kernel_rad, kernel_size),
            "resolved": coverage(*grid, kernel_rad, kernel_size, equator_kernel_basis(*grid, kernel_rad, kernel_size)),
            "smooth": coverage(*grid, kernel_rad, kernel_size, smooth_kernel_basis(kernel_size)),
            "nodes3x6": coverage(*grid, kernel_rad, (3, 6)),
        }
    return out


def tangent_pattern(size, lat, lon, half_width, device="cpu"):
    """A structured pattern ``[1, 3, H, W]`` drawn flat on the tangent plane at ``(lat, lon)`` (radians): the E shape,
    stripes across it and a ring, within ``tan(half_width)`` of the centre."""
    height, width = size[0] * 2, size[1] * 2
    x, y, front = gnomonic(sphere_directions(height, width, device), torch.tensor(lat), torch.tensor(lon))
    px, py = x / math.tan(half_width), y / math.tan(half_width)
    px, py = torch.where(front, px, 9.0), torch.where(front, py, 9.0)
    grid = torch.stack([px, -py], -1)[None]
    shape = F.grid_sample(shape_bitmaps()[1][None, None].to(device), grid, "bilinear", "zeros", align_corners=False)[
        0, 0
    ]
    inside = (px.abs() < 1) & (py.abs() < 1)
    stripes = (0.5 + 0.5 * torch.sin(2 * math.pi * 1.2 * (0.8 * px + 0.6 * py))) * inside
    ring = torch.exp(-((torch.hypot(px, py) - 0.7) ** 2) / 0.02) * front
    return F.avg_pool2d(torch.stack([shape, stripes, ring])[None], 2)


def read_back(output, lat, lon, half_width, points=24):
    """Sample ``output [B, C, H, W]`` on a ``points x points`` grid of the tangent plane at ``(lat, lon)`` covering
    ``1.5 tan(half_width)`` around it (bilinear, circular in longitude): ``[B, C, points, points]``."""
    height, width = output.shape[-2:]
    t = torch.linspace(-1.5, 1.5, points, dtype=torch.float64) * math.tan(half_width)
    y, x = torch.meshgrid(-t, t, indexing="ij")
    rho = torch.hypot(x, y)
    c = torch.atan(rho)
    safe = torch.where(rho > 0, rho, torch.ones_like(rho))
    q_lat = torch.asin(torch.cos(c) * math.sin(lat) + y * torch.sin(c) / safe * math.cos(lat))
    q_lon = lon + torch.atan2(x * torch.sin(c), rho * math.cos(lat) * torch.cos(c) - y * math.sin(lat) * torch.sin(c))
    row = (math.pi / 2 - q_lat) * height / math.pi - 0.5
    col = torch.remainder(q_lon * width / (2 * math.pi) - 0.5, width) + 1  # one column of circular padding
    grid = torch.stack([(col + 0.5) * 2 / (width + 2) - 1, (row + 0.5) * 2 / height - 1], -1)[None].float()
    padded = F.pad(output, (1, 1, 0, 0), mode="circular")
    return F.grid_sample(padded, grid.expand(len(output), -1, -1, -1), "bilinear", "border", align_corners=False)


class CarriedFrameSphereConv(SphereConv):
    """Diagnostic (not a layer for networks): ``SphereConv`` whose taps at every pixel are laid out in the frame of
    the pole ``(-cos(lon) sin(lat), -sin(lon) sin(lat), cos(lat))``, where the rotation carrying the equator to
    latitude ``lat`` along the meridian ``lon`` carries the north pole. On a pattern carried that way the taps are the
    equator's taps carried along, so the response differs from the equator's only by the pixel sampling (the
    geometry, north-aligned kernels turning against the pattern by up to ``dlambda sin(lat)``, is taken out)."""

    needs_latitude = True

    def forward(self, input, lat, lon):
        height, width = input.shape[-2:]
        k = self.kernel_size
        pole = torch.tensor(
            [-math.cos(lon) * math.sin(lat), -math.sin(lon) * math.sin(lat), math.cos(lat)], dtype=torch.float64
        )
        theta, phi = colatitudes(height)[:, None], longitudes(width)[None, :]
        c = torch.stack(
            [torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta).expand(-1, width)],
            -1,
        )
        east = F.normalize(torch.linalg.cross(pole.expand_as(c), c), dim=-1)
        north = torch.linalg.cross(c, east)
        steps = torch.arange(-(k // 2), k // 2 + 1, dtype=torch.float64)
        tx = torch.tan(steps * 2 * math.pi / width)[None, :]  # [b, a]
        ty = torch.tan(-steps * math.pi / height)[:, None] / torch.cos(steps * 2 * math.pi / width)[None, :]
        d = F.normalize(
            c[:, None, :, None]
            + tx[None, :, None, :, None] * east[:, None, :, None]
            + ty[None, :, None, :, None] * north[:, None, :, None],
            dim=-1,
        )  # [H, b, W, a, 3]
        row = torch.acos(d[..., 2].clamp(-1, 1)) * height / math.pi - 0.5
        col = torch.remainder(torch.atan2(d[..., 1], d[..., 0]), 2 * math.pi) * width / (2 * math.pi) - 0.5
        grid = tap_grid(row, col, height, width).to(input.dtype)
        return convolve_taps(input, grid, self.kernel(), self.bias, self.antialias)


def layers_for(size):
    """The first layer (conv1's radius and grid) of each model, 3 -> 16 channels, as factories of a seed."""
    height, width = size
    kernel_rad, kernel_size = ENCODER[0][3], ENCODER[0][4]

    def crown(**options):
        return lambda: SphericalConv(
            3, 16, kernel_rad=kernel_rad, kernel_size=options.pop("nodes", kernel_size), grid_size=size, **options
        )

    k = planar_kernel_size(height, width, kernel_rad)
    return {
        "paper": crown(),
        "resolved": crown(kernel_basis="resolved"),
        "smooth": crown(kernel_basis="smooth"),
        "nodes3x6": crown(nodes=(3, 6)),
        "sphereconv": lambda: SphereConv(3, 16, 3),
        "sphereconv_aa": lambda: SphereConv(3, 16, 3, antialias=True),
        # diagnostics: kernels symmetric under the square's turns (less sensitive to the frame turning), and the
        # taps carried with the pattern (only the pixel sampling differs), each without and with the prefilter
        "sphereconv_d4": lambda: SphereConv(3, 16, 3, symmetric=True),
        "sphereconv_d4_aa": lambda: SphereConv(3, 16, 3, antialias=True, symmetric=True),
        "sphereconv_carried": lambda: CarriedFrameSphereConv(3, 16, 3),
        "sphereconv_carried_aa": lambda: CarriedFrameSphereConv(3, 16, 3, antialias=True),
        "planar": lambda: LongitudeCircularConv2d(3, 16, k, bias=False),
        # the instrument's ceilings: the pattern itself (no layer), and the pattern through the prefilter alone
        "identity": lambda: torch.nn.Identity(),
        "identity_aa": lambda: longitude_prefilter,
    }


class FirstLayer(torch.nn.Module):
    """A trained U-Net's first convolution on a 3-channel pattern: the previous-map channel set to zero, as in the
    latitude benchmark's training."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, pattern):
        return self.conv(torch.cat([pattern, torch.zeros_like(pattern[:, :1])], dim=1))


def trained_first_layers(networks):
    """``{size: {"MODEL seed S": factory}}`` of the first layers of ``networks``, ``(model, saved)`` pairs as
    ``load_trained`` returns them for files written by ``latitude_generalisation.py --save-models`` (each factory
    returns the same trained layer)."""
    layers = {}
    for model, saved in networks:
        key = f"{saved['size'][0]}x{saved['size'][1]}"
        layer = FirstLayer(model.conv1)
        layers.setdefault(key, {})[f"{saved['model']} seed {saved['seed']}"] = lambda layer=layer: layer
    return layers


def channel_correlation(base, moved):
    """Per-channel correlation ``[C]`` of two read-backs ``[C, P]`` (NaN where either channel is constant)."""
    a, b = base - base.mean(1, keepdim=True), moved - moved.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


# Each convolution of the U-Net, before its BatchNorm + ReLU (``convK``) and after (``reluK``); conv7 is the logits.
UNET_STAGES = tuple(f"{kind}{k}" for k in range(1, 7) for kind in ("conv", "relu")) + ("conv7",)


def unet_stages(model, pattern):
    """``{stage: [1, C, h, w]}`` (``UNET_STAGES``, in forward order) of a latitude-benchmark U-Net run on a 3-channel
    ``pattern`` (previous map zero), captured by forward hooks so that the network's own forward pass runs: ``convK``
    on the convolution, ``reluK`` as the ReLU of the BatchNorm ``bnK``'s output."""
    captured = {}

    def capture(name):
        def hook(module, inputs, output):
            captured[name] = F.relu(output) if name.startswith("relu") else output

        return hook

    hooks = [getattr(model, name.replace("relu", "bn")).register_forward_hook(capture(name)) for name in UNET_STAGES]
    try:
        model(pattern, torch.zeros_like(pattern[:, :1]))
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@torch.no_grad()
def stage_meridian(stages, size, latitudes=(0.0, 22.5, 45.0, 67.5), half_width_deg=14.0):
    """Correlation of every stage's response in the pattern's tangent frame with its response at the equator.

    ``stages(pattern) -> {name: [1, C, h, w]}``. The latitudes are multiples of 22.5 degrees, so the pattern sits at
    the same place relative to the pixel rows of every stage with at least 8 rows (the equator falls between two rows
    of every even grid). A value is the mean over the channels that vary at the equator (a channel constant there, a
    dead ReLU, has nothing to compare); one that varies there and is flat at ``lat`` counts as 0. Returns
    ``{name: {str(lat): value, "live": channels used}}``, None values for a stage without such channels.
    """
    lon, half_width = math.pi, math.radians(half_width_deg)
    responses = {lat: stages(tangent_pattern(size, math.radians(lat), lon, half_width)) for lat in latitudes}
    out = {}
    for name, base_map in responses[latitudes[0]].items():
        base = read_back(base_map, math.radians(latitudes[0]), lon, half_width).flatten(2)[0]
        spread = base.std(1)
        varies = spread > 1e-6 * float(spread.max())
        out[name] = {"live": int(varies.sum())}
        if not varies.any():
            out[name].update({str(lat): None for lat in latitudes})
            continue
        for lat in latitudes:
            moved = read_back(responses[lat][name], math.radians(lat), lon, half_width).flatten(2)[0][varies]
            corr = channel_correlation(base[varies], moved)
            out[name][str(lat)] = float(torch.where(moved.std(1) > 0, corr, torch.zeros_like(corr)).mean())
    return out


@torch.no_grad()
def meridian(size, latitudes=(0, 10, 20, 30, 45, 60, 70), half_width_deg=14.0, inits=3, layers=None, factories=None):
    """Correlation of each layer's response in the pattern's tangent frame with its response at the equator, per
    latitude (mean over channels and ``inits`` initialisations). ``factories``: ``{name: factory}`` of the layers
    (default: the untrained first layers of ``layers_for``), ``layers``: only these names."""
    lon, half_width = math.pi, math.radians(half_width_deg)
    patterns = {lat: tangent_pattern(size, math.radians(lat), lon, half_width) for lat in latitudes}
    out = {}
    for name, factory in (layers_for(size) if factories is None else factories).items():
        if layers is not None and name not in layers:
            continue
        values = {lat: [] for lat in latitudes}
        for seed in range(inits):
            torch.manual_seed(seed)
            layer = factory()

            def response(lat, layer=layer):
                pattern = patterns[lat]
                if getattr(layer, "needs_latitude", False):
                    return layer(pattern, math.radians(lat), lon)
                return layer(pattern)

            base = read_back(response(0), 0.0, lon, half_width).flatten(2)[0]
            for lat in latitudes:
                moved = read_back(response(lat), math.radians(lat), lon, half_width).flatten(2)[0]
                values[lat].append(float(channel_correlation(base, moved).mean()))
        out[name] = {str(lat): sum(v) / len(v) for lat, v in values.items()}
    return out


def markdown(result):
    lines = []
    for size, layers in result["coverage"].items():
        lines.append(f"\n{size}: unseen energy share by band {[f'{a}-{b}' for a, b in BANDS]} (touched node share)\n")
        lines.append("| layer | grid | paper (touched) | resolved | smooth | (3, 6) nodes |")
        lines.append("|---|---|---|---|---|---|")
        for name, c in layers.items():

            def cell(entry, touched=False):
                parts = []
                for u, t in zip(entry["unseen"], entry["touched"]):
                    if u is None:
                        parts.append("-")
                    else:
                        parts.append(f"{u:.2f}" + (f" ({t:.2f})" if touched and t is not None else ""))
                return " / ".join(parts)

            lines.append(
                f"| {name} | {c['grid'][0]}x{c['grid'][1]} | {cell(c['paper'], True)} | {cell(c['resolved'])} | "
                f"{cell(c['smooth'])} | {cell(c['nodes3x6'])} |"
            )
    for size, models in result["meridian"].items():
        lats = list(next(iter(models.values())))
        kind = "trained" if result.get("trained") else "untrained"
        lines.append(f"\n{size}: {kind} first layer, correlation with its equator response\n")
        lines.append("| layer | " + " | ".join(f"{lat} deg" for lat in lats) + " |")
        lines.append("|---|" + "---|" * len(lats))
        for name, values in models.items():
            lines.append(f"| {name} | " + " | ".join(f"{values[lat]:.3f}" for lat in lats) + " |")
    for size, networks in result.get("stages", {}).items():
        lats = [lat for lat in next(iter(next(iter(networks.values())).values())) if lat != "live"]
        lines.append(f"\n{size}: every stage of the trained networks, correlation with its equator response\n")
        lines.append("| network | stage | live channels | " + " | ".join(f"{lat} deg" for lat in lats) + " |")
        lines.append("|---|---|---|" + "---|" * len(lats))
        for network, stages in networks.items():
            for stage, values in stages.items():
                cells = ["-" if values[lat] is None else f"{values[lat]:.3f}" for lat in lats]
                lines.append(f"| {network} | {stage} | {values['live']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for mechanism.json")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(32, 64), (64, 128), (128, 256)])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--layers", nargs="+", default=None, help="meridian: only these layers (default: all)")
    parser.add_argument("--no-coverage", action="store_true", help="skip the coverage measurement")
    parser.add_argument(
        "--trained", nargs="+", default=None, help="networks written by latitude_generalisation.py --save-models: "
        "the meridian of their first layers instead of the untrained ones (no coverage)"
    )  # fmt: skip
    parser.add_argument(
        "--stages", action="store_true", help="with --trained: the meridian of every stage of the networks too"
    )
    args = parser.parse_args(argv)
    if args.stages and not args.trained:
        parser.error("--stages measures trained networks: give them with --trained")
    torch.set_num_threads(args.threads)
    result = {
        "coverage": {},
        "meridian": {},
        "bands_deg": BANDS,
        "train_band_deg": TRAIN_BAND,
        "torch": torch.__version__,
    }
    if args.trained:
        networks = [load_trained(path) for path in args.trained]
        for key, factories in trained_first_layers(networks).items():
            size = parse_size(key)
            result["meridian"][key] = meridian(size, inits=1, factories=factories)
        result["trained"] = sorted(args.trained)
        if args.stages:
            result["stages"] = {}
            for model, saved in networks:
                key = f"{saved['size'][0]}x{saved['size'][1]}"
                name = f"{saved['model']} seed {saved['seed']}"
                result["stages"].setdefault(key, {})[name] = stage_meridian(
                    lambda pattern, model=model: unet_stages(model, pattern), tuple(saved["size"])
                )
        atomic_write_bytes(os.path.join(args.out, "mechanism.json"), json.dumps(result, indent=1).encode())
        print(markdown(result))
        return
    for size in args.sizes:
        key = f"{size[0]}x{size[1]}"
        if not args.no_coverage:
            result["coverage"][key] = layer_coverage(size)
        result["meridian"][key] = meridian(size, layers=args.layers)
    atomic_write_bytes(os.path.join(args.out, "mechanism.json"), json.dumps(result, indent=1).encode())
    print(markdown(result))


if __name__ == "__main__":
    main()

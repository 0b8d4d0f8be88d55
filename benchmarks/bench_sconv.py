"""Benchmark: the spherical crown convolution against its equal-tap planar twin and torch-harmonics' DISCO convolution.

Per layer case (fwd+bwd of one layer, input gradient included, median of timed repetitions):
- ``SphericalConv`` (path chosen by ``spherical_conv``'s cost model),
- ``nn.Conv2d`` with k x k taps, k odd and k^2 nearest the mean number of crown taps per output pixel (padding k // 2),
- torch-harmonics ``DiscreteContinuousConvS2`` at the same H, W, channels and cutoff radius, when importable,
and the ratios. Whole model: a training step (fwd+bwd+SGD) of ``models.baseline_unet.SphericalUNet`` against its planar
twin (``use_sconv=False, use_spooling=False``): images/s and peak memory. Optionally the forward of the U-Net at batch 1
on the CPU against its twin, and each formulation of ``spherical_conv`` forced in turn (to calibrate the cost model).

Usage (from the repository root):
    python benchmarks/bench_sconv.py --out results/            # full run, on the GPU machine
    python benchmarks/bench_sconv.py --quick                   # CPU smoke run (a few seconds)
    python benchmarks/bench_sconv.py --only cpu-unet           # CPU U-Net forward, batch 1, 64x128

Writes ``bench.json`` and ``bench.md`` (the tables) into ``--out`` and prints the tables.
"""

import argparse
import datetime
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.baseline_unet import DECODER, ENCODER, SphericalUNet  # noqa: E402
from sconv.functional import conv_cost, conv_gather  # noqa: E402
from sconv.functional import sconv as sconv_impl  # noqa: E402
from sconv.functional.crown import crown_taps  # noqa: E402
from sconv.module.sconv import SphericalConv  # noqa: E402

# The issue's torch-harmonics 0.8.0 figures with its CUDA extension (H100, B=8, C 64->64, fwd+bwd, fp32), not
# re-measured here: building the extension costs ~6 minutes of GPU-machine time.
DISCO_ISSUE_MS = {(128, 256, 3): 13.59, (256, 512, 3): 51.18, (128, 256, 6): 22.86, (256, 512, 6): 82.94}
DISCO_KERNEL_SHAPE = (5, 8)  # piecewise-linear basis: 17 basis functions, as in the issue
PATHS = ("gather", "mix_first", "project_first")
SPARSE_NONZERO_LIMIT = 2**25  # forced sparse paths build a CSR matrix of this many entries at most (CUDA's cap)


def unet_layer_cases(height, width, batch):
    """The seven crown convolutions of the Spherical U-Net at the sizes an ``height x width`` input gives them."""
    return [
        dict(name=f"{name} {height}x{width}", batch=batch, c_in=c_in, c_out=c_out, height=height // scale,
             width=width // scale, kernel_rad=r, kernel_size=size)
        for name, c_in, c_out, r, size, scale in ENCODER + DECODER
    ]  # fmt: skip


def wide_layer_cases(height, width, batch, spacings, kernel_size=(4, 8)):
    """C 64 -> 64 with a crown of ``spacings`` row spacings (the issue's DISCO comparison)."""
    return [
        dict(name=f"64->64 r={s}dθ {height}x{width}", batch=batch, c_in=64, c_out=64, height=height, width=width,
             kernel_rad=s * math.pi / height, kernel_size=kernel_size, spacings=s)
        for s in spacings
    ]  # fmt: skip


def crown_pixels_per_output(height, width, kernel_rad, kernel_size):
    """Mean number of distinct input pixels in a crown, over output pixels (pole taps are repeated kw times)."""
    geom = crown_taps(height, width, kernel_rad, (1, 1), tuple(kernel_size))
    out_row = torch.repeat_interleave(torch.arange(height), geom.taps_per_row())
    distinct = torch.unique(out_row * (2 * width * height) + geom.in_row * 2 * width + geom.col_offset).numel()
    return distinct / height


def nearest_odd_square(taps):
    """The odd k whose k * k is nearest ``taps``."""
    k = max(1, int(math.sqrt(taps)))
    k -= 1 - k % 2
    return k if taps - k * k <= (k + 2) ** 2 - taps else k + 2


class Timer:
    """Median wall time of a step (CUDA events on a GPU) and its peak memory above what was allocated before."""

    def __init__(self, device, warmup, reps):
        self.device, self.warmup, self.reps = device, warmup, reps

    def __call__(self, step):
        cuda = self.device.type == "cuda"
        for _ in range(self.warmup):
            step()
        peak = None
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            step()
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        times = []
        for _ in range(self.reps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                begin = time.perf_counter()
                step()
                times.append((time.perf_counter() - begin) * 1e3)
        return statistics.median(times), peak


def autocast(device, dtype, cache_enabled=True):
    if dtype != "bf16":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)


def layer_step(layer, x, device, dtype):
    """A fwd+bwd step of ``layer`` on ``x`` (gradients for the input and the parameters, not accumulated)."""
    params = [p for p in layer.parameters() if p.requires_grad]
    with autocast(device, dtype):
        grad_out = torch.randn_like(layer(x))

    def step():
        with autocast(device, dtype):
            y = layer(x)
        torch.autograd.grad(y, [x, *params], grad_out)

    return step


def graphed(step):
    """``step`` captured once in a CUDA graph (after warm-up on a side stream): its replay, which costs no host time
    per kernel, so that the two sides compare by their GPU work alone."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def forward_step(layer, x, device, dtype):
    with autocast(device, dtype):
        return layer(x)


def time_layer(timer, layer, x, device, dtype):
    """``(fwd+bwd ms, its MB, forward-alone ms)`` of ``layer`` on ``x``, each by ``timer``."""
    ms, mb = timer(layer_step(layer, x, device, dtype))
    with torch.no_grad():
        fwd_ms = timer(functools.partial(forward_step, layer, x, device, dtype))[0]
    return ms, mb, fwd_ms


def disco_layer(case, device, **options):
    """torch-harmonics' DISCO convolution for ``case`` (``options`` to its constructor, e.g. 0.9's ``fused``) and a
    label, or ``(None, reason)`` when it cannot be imported."""
    try:
        import torch_harmonics
        from torch_harmonics import DiscreteContinuousConvS2
    except ImportError as error:
        return None, f"torch_harmonics not importable ({error})"
    shape = (case["height"], case["width"])
    layer = DiscreteContinuousConvS2(
        case["c_in"], case["c_out"], shape, shape, DISCO_KERNEL_SHAPE, basis_type="piecewise linear",
        theta_cutoff=case["kernel_rad"], bias=False, **options,
    )  # fmt: skip
    if hasattr(layer, "optimized_kernel"):  # 0.9.x: the layer says whether it runs compiled kernels
        kind = "compiled kernels" if layer.optimized_kernel else "torch fallback"
    else:  # 0.8.x: its convolution module says whether the CUDA extension loaded
        from torch_harmonics import convolution

        kind = "CUDA extension" if getattr(convolution, "_cuda_extension_available", False) else "torch fallback"
    return layer.to(device), f"torch_harmonics {torch_harmonics.__version__}, {kind}"


def forced_path(path):
    """Context manager forcing ``spherical_conv`` onto one formulation."""

    class Forced:
        def __enter__(self):
            self.saved = sconv_impl.choose_path
            sconv_impl.choose_path = lambda *args: path

        def __exit__(self, *exc):
            sconv_impl.choose_path = self.saved

    return Forced()


def sparse_nonzeros(case):
    geom = crown_taps(case["height"], case["width"], case["kernel_rad"], (1, 1), tuple(case["kernel_size"]))
    return 4 * len(geom.in_row) * case["width"]


def layer_pair(case, device):
    """``(ours, planar, x, crown pixels)`` of a layer case, seeded: our ``SphericalConv``, cuDNN's equal-tap
    ``nn.Conv2d`` (odd k, k^2 nearest the mean crown pixels per output pixel) and an input needing a gradient."""
    torch.manual_seed(0)
    size = tuple(case["kernel_size"])
    ours = SphericalConv(case["c_in"], case["c_out"], case["kernel_rad"], kernel_size=size, kernel_sr=None).to(device)
    taps = crown_pixels_per_output(case["height"], case["width"], case["kernel_rad"], size)
    k = nearest_odd_square(taps)
    planar = nn.Conv2d(case["c_in"], case["c_out"], k, padding=k // 2, bias=False).to(device)
    x = torch.randn(case["batch"], case["c_in"], case["height"], case["width"], device=device, requires_grad=True)
    return ours, planar, x, taps


def run_layer_case(case, device, dtype, timer, args):
    size = tuple(case["kernel_size"])
    ours, planar, x, taps = layer_pair(case, device)
    k = planar.kernel_size[0]
    fast = x.shape[0] > 0 and sconv_impl.triton_available(device, x.dtype)
    triton_dtype = (torch.bfloat16 if dtype == "bf16" else torch.float32) if fast else None
    path = conv_cost.choose_path(
        case["batch"], case["c_in"], case["c_out"], case["height"], case["width"], ours.kernel_rad, (1, 1), size,
        triton_dtype,
    )  # fmt: skip
    row = dict(case, dtype=dtype, path=path, crown_pixels=round(taps, 1), planar_k=k)
    row["ours_ms"], row["ours_mb"], row["ours_fwd_ms"] = time_layer(timer, ours, x, device, dtype)
    row["conv2d_ms"], row["conv2d_mb"] = timer(layer_step(planar, x, device, dtype))
    row["ratio_vs_conv2d"] = row["ours_ms"] / row["conv2d_ms"]
    if device.type == "cuda":  # both sides replayed from a CUDA graph: GPU time without the launch overhead
        row["ours_graph_ms"] = timer(graphed(layer_step(ours, x, device, dtype)))[0]
        row["conv2d_graph_ms"] = timer(graphed(layer_step(planar, x, device, dtype)))[0]
        row["graph_ratio_vs_conv2d"] = row["ours_graph_ms"] / row["conv2d_graph_ms"]
    if args.paths:
        row["paths_ms"] = {}
        if device.type == "cuda":
            row["paths_graph_ms"] = {}
        for forced in PATHS:
            if forced != "gather" and sparse_nonzeros(case) > SPARSE_NONZERO_LIMIT:
                continue
            with forced_path(forced):
                row["paths_ms"][forced] = timer(layer_step(ours, x, device, dtype))[0]
                if device.type == "cuda":  # captured with the path forced: the GPU time of each formulation
                    row["paths_graph_ms"][forced] = timer(graphed(layer_step(ours, x, device, dtype)))[0]
    if dtype == "fp32" and case.get("disco"):
        layer, row["disco_note"] = disco_layer(case, device)
        if layer is not None:
            slow = Timer(device, warmup=1, reps=args.disco_reps)
            row["disco_ms"], row["disco_mb"] = slow(layer_step(layer, x, device, dtype))
            row["disco_over_ours"] = row["disco_ms"] / row["ours_ms"]
            del layer
    issue = DISCO_ISSUE_MS.get((case["height"], case["width"], case.get("spacings")))
    if issue is not None and case["batch"] == 8 and dtype == "fp32":
        row["disco_cuda_issue_ms"] = issue
        row["disco_cuda_issue_over_ours"] = issue / row["ours_ms"]
    return row


def run_kernel_split(device, timer):
    """The Triton gather path's kernels timed apart (operands prepared beforehand): the three crown kernels, the
    backward ones with both operand layouts, and the layout kernels that pad the input and fold its gradient."""
    from sconv.functional.conv_layout import wrap_fold, wrap_pad
    from sconv.functional.conv_plans import triton_plan

    case = wide_layer_cases(128, 256, 8, (3,))[0]
    height, width, size = case["height"], case["width"], case["kernel_size"]
    plan = triton_plan(height, width, case["kernel_rad"], (1, 1), size, device)
    pad = (plan.window.pad_left, plan.window.pad_right)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(case["batch"], case["c_in"], height, width, device=device, dtype=dtype)
        operands = {True: wrap_pad(x, *pad, dtype, channels_last=False), False: wrap_pad(x, *pad, dtype, True)}
        kernel = torch.randn(plan.tap_row.shape[0], case["c_out"], case["c_in"], device=device, dtype=dtype)
        grad_y = torch.randn(case["batch"], case["c_out"], height, width, device=device, dtype=dtype)
        grad_y_cl = wrap_pad(grad_y, 0, 0, dtype, True)
        row = dict(dtype=str(dtype).replace("torch.", ""))
        row["forward_ms"] = timer(functools.partial(conv_gather._launch_forward, operands[False], kernel, None, plan,
                                                    width, 1))[0]  # fmt: skip
        row["wrap_pad_ms"] = timer(functools.partial(wrap_pad, x, *pad, dtype, True))[0]
        row["wrap_fold_ms"] = timer(functools.partial(wrap_fold, operands[False], pad[0], width, dtype))[0]
        saved = conv_gather._k_major_backward
        for k_major in (True, False):
            conv_gather._k_major_backward = functools.partial(lambda k_major, dtype: k_major, k_major)
            tag = "k_major" if k_major else "as_forward"
            e = kernel.transpose(1, 2).contiguous() if k_major else kernel
            grad_input = functools.partial(conv_gather._launch_grad_input, grad_y_cl, e, plan, torch.empty_like(x),
                                           1, True)  # fmt: skip
            grad_kernel = functools.partial(conv_gather._launch_grad_kernel, operands[k_major], grad_y, plan,
                                            kernel.shape, 1, k_major)  # fmt: skip
            row[f"grad_input_{tag}_ms"] = timer(grad_input)[0]
            row[f"grad_kernel_{tag}_ms"] = timer(grad_kernel)[0]
        conv_gather._k_major_backward = saved
        rows.append(row)
        print("kernels", row, flush=True)
    return dict(case=case["name"] + f" B={case['batch']}", rows=rows)


def unet_training_step(height, width, batch, device, dtype, spherical, graph_model=False):
    """``(model, step)``: the U-Net (or its planar twin) and one training step of it (fwd, MSE, bwd, SGD) on a
    random batch. ``graph_model``: the model's forward and backward replayed from CUDA graphs, the loss and the SGD
    step eager, as ``train_unet.py --cuda-graph`` does (``torch.cuda.make_graphed_callables``)."""
    torch.manual_seed(0)
    model = SphericalUNet((height, width), use_sconv=spherical, use_spooling=spherical).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    frame = torch.randn(batch, 3, height, width, device=device)
    previous = torch.rand(batch, 1, height, width, device=device)
    target = torch.rand(batch, 1, height, width, device=device)
    if graph_model:  # autocast's cache of cast weights must be off around a graphed model
        with autocast(device, dtype, cache_enabled=False):
            torch.cuda.make_graphed_callables(model, (frame, previous))

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype, cache_enabled=not graph_model):
            out = model(frame, previous)
        F.mse_loss(out.float(), target).backward()
        optimizer.step()

    return model, step


def run_unet_step(height, width, batch, device, dtype, timer):
    """Both networks' training step, eager and (CUDA) with the model graphed as ``train_unet.py --cuda-graph``."""
    rows = {}
    variants = [("spherical", True, False), ("planar", False, False)]
    if device.type == "cuda":
        variants += [("spherical_graphed", True, True), ("planar_graphed", False, True)]
    for name, spherical, graph_model in variants:
        ms, mb = timer(unet_training_step(height, width, batch, device, dtype, spherical, graph_model)[1])
        rows[name] = dict(ms=ms, images_per_s=batch / ms * 1e3, peak_mb=mb)
    graphed = {}
    if "spherical_graphed" in rows:
        graphed = dict(
            graphed_time_ratio=rows["spherical_graphed"]["ms"] / rows["planar_graphed"]["ms"],
            graph_speedup=rows["spherical"]["ms"] / rows["spherical_graphed"]["ms"],
        )
    return dict(
        height=height, width=width, batch=batch, dtype=dtype, **{f"{k}_{n}": v for k, r in rows.items() for n, v in
                                                                   r.items()},
        time_ratio=rows["spherical"]["ms"] / rows["planar"]["ms"],
        memory_ratio=(rows["spherical"]["peak_mb"] / rows["planar"]["peak_mb"]) if rows["planar"]["peak_mb"] else None,
        **graphed,
    )  # fmt: skip


def run_cpu_unet(height, width, reps):
    """Forward of the U-Net at batch 1 on the CPU against its planar twin (no gradients)."""
    out = {}
    for name, spherical in (("spherical", True), ("planar", False)):
        torch.manual_seed(0)
        model = SphericalUNet((height, width), use_sconv=spherical, use_spooling=spherical).eval()
        frame, previous = torch.randn(1, 3, height, width), torch.rand(1, 1, height, width)
        with torch.no_grad():
            forward = functools.partial(model, frame, previous)
            out[name + "_ms"] = Timer(torch.device("cpu"), warmup=2, reps=reps)(forward)[0]
    out["ratio"] = out["spherical_ms"] / out["planar_ms"]
    out["threads"] = torch.get_num_threads()
    return dict(height=height, width=width, **out)


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def tables(results):
    lines = []
    env = results["environment"]
    lines.append(f"Device: {env['device']}; torch {env['torch']}; Triton {env['triton']}; {env['date']}.")
    if results.get("layers"):
        lines += [
            "",
            "| case | B | dtype | path | crown px | ours ms | conv2d k | conv2d ms | ours/conv2d | ours MB | conv2d MB "
            "| DISCO ms | DISCO/ours | DISCO CUDA ms (issue) | issue DISCO/ours |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["layers"]:
            lines.append(
                f"| {r['name']} | {r['batch']} | {r['dtype']} | {r['path']} | {r['crown_pixels']} | "
                f"{fmt(r['ours_ms'])} | {r['planar_k']} | {fmt(r['conv2d_ms'])} | {fmt(r['ratio_vs_conv2d'])} | "
                f"{fmt(r['ours_mb'], 0)} | {fmt(r['conv2d_mb'], 0)} | {fmt(r.get('disco_ms'))} | "
                f"{fmt(r.get('disco_over_ours'), 1)} | {fmt(r.get('disco_cuda_issue_ms'))} | "
                f"{fmt(r.get('disco_cuda_issue_over_ours'), 1)} |"
            )
        graph_rows = [r for r in results["layers"] if r.get("ours_graph_ms")]
        if graph_rows:
            lines += ["", "CUDA-graph replay of the same fwd+bwd steps (both sides):", ""]
            lines += ["| case | B | dtype | ours ms | conv2d ms | ours/conv2d |", "|---|---|---|---|---|---|"]
            for r in graph_rows:
                lines.append(
                    f"| {r['name']} | {r['batch']} | {r['dtype']} | {fmt(r['ours_graph_ms'])} | "
                    f"{fmt(r['conv2d_graph_ms'])} | {fmt(r['graph_ratio_vs_conv2d'])} |"
                )
        forced = [r for r in results["layers"] if r.get("paths_ms")]
        if forced:
            lines += ["", "| case | dtype | chosen | " + " | ".join(f"{p} ms" for p in PATHS) + " |",
                      "|---|---|---|" + "---|" * len(PATHS)]  # fmt: skip
            for r in forced:
                cells = " | ".join(fmt(r["paths_ms"].get(p)) for p in PATHS)
                lines.append(f"| {r['name']} B={r['batch']} | {r['dtype']} | {r['path']} | {cells} |")
        notes = sorted({r["disco_note"] for r in results["layers"] if r.get("disco_note")})
        lines += [f"DISCO: {note}." for note in notes]
    if results.get("unet"):
        lines += [
            "",
            "| U-Net step | B | dtype | spherical ms | planar ms | time ratio | spherical img/s | planar img/s "
            "| spherical MB | planar MB | memory ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["unet"]:
            lines.append(
                f"| {r['height']}x{r['width']} | {r['batch']} | {r['dtype']} | {fmt(r['spherical_ms'])} | "
                f"{fmt(r['planar_ms'])} | {fmt(r['time_ratio'])} | {fmt(r['spherical_images_per_s'], 1)} | "
                f"{fmt(r['planar_images_per_s'], 1)} | {fmt(r['spherical_peak_mb'], 0)} | "
                f"{fmt(r['planar_peak_mb'], 0)} | {fmt(r['memory_ratio'])} |"
            )
        graphed = [r for r in results["unet"] if "graphed_time_ratio" in r]
        if graphed:
            lines += [
                "",
                "Model graphed (`train_unet.py --cuda-graph`: forward and backward replayed from CUDA graphs, loss and "
                "SGD step eager), both networks:",
                "",
                "| U-Net step | B | dtype | spherical ms | planar ms | time ratio | spherical speed-up over eager |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in graphed:
                lines.append(
                    f"| {r['height']}x{r['width']} | {r['batch']} | {r['dtype']} | {fmt(r['spherical_graphed_ms'])} | "
                    f"{fmt(r['planar_graphed_ms'])} | {fmt(r['graphed_time_ratio'])} | {fmt(r['graph_speedup'])} |"
                )
    if results.get("kernels"):
        split = results["kernels"]
        lines += ["", f"Triton kernels alone, {split['case']} (ms; backward operands k-major / laid out as forward):"]
        for r in split["rows"]:
            lines.append(
                f"- {r['dtype']}: forward {fmt(r['forward_ms'])}, grad input {fmt(r['grad_input_k_major_ms'])} / "
                f"{fmt(r['grad_input_as_forward_ms'])}, grad kernel {fmt(r['grad_kernel_k_major_ms'])} / "
                f"{fmt(r['grad_kernel_as_forward_ms'])}; wrap_pad {fmt(r['wrap_pad_ms'])}, "
                f"wrap_fold {fmt(r['wrap_fold_ms'])}"
            )
    if results.get("cpu_unet"):
        r = results["cpu_unet"]
        lines += [
            "",
            f"CPU U-Net forward, batch 1, {r['height']}x{r['width']}, {r['threads']} threads: spherical "
            f"{fmt(r['spherical_ms'], 1)} ms, planar twin {fmt(r['planar_ms'], 1)} ms, ratio {fmt(r['ratio'])}.",
        ]
    if results.get("geometry"):
        g = results["geometry"]
        lines += ["", f"Geometry (crown_taps) {g['config']}: {fmt(g['seconds'])} s."]
    return "\n".join(lines)


def write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: small cases, few repetitions")
    parser.add_argument("--only", nargs="+", choices=("layers", "unet", "cpu-unet", "geometry", "kernels"),
                        default=None, help="sections to run (default: all that fit the device)")  # fmt: skip
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=("fp32", "bf16"))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--paths", action="store_true", help="also time each formulation forced in turn")
    parser.add_argument("--disco", choices=("none", "reduced", "all"), default="reduced",
                        help="DISCO cases: none, the reduced 64->64 ones (64x128), or every case")  # fmt: skip
    parser.add_argument("--disco-reps", type=int, default=2)
    parser.add_argument("--filter", default="", help="only the layer cases whose name contains this")
    parser.add_argument(
        "--cpu-fit", action="store_true",
        help="the layer cases the cost model's CPU weights are fitted to: the U-Net's layers at 64x128, batch 1 and 2",
    )  # fmt: skip
    parser.add_argument("--out", default=None, help="folder for bench.json and bench.md")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True  # "fp32 (TF32 allowed)", for both sides
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    import importlib.util

    triton_version = None
    if importlib.util.find_spec("triton") is not None:
        import triton

        triton_version = triton.__version__
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    results = dict(
        environment=dict(
            device=name, torch=torch.__version__, triton=triton_version, python=platform.python_version(),
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            threads=torch.get_num_threads(),
        ),
        args=vars(args),
    )  # fmt: skip
    sections = set(
        args.only or (("kernels", "layers", "unet", "geometry") if device.type == "cuda" else ("layers", "unet"))
    )
    if args.cpu_fit:
        reps, warmup = args.reps, args.warmup
        layer_cases = unet_layer_cases(64, 128, 1) + unet_layer_cases(64, 128, 2)
        unet_sizes = []
    elif args.quick:
        reps, warmup = 2, 1
        layer_cases = [dict(c, batch=2) for c in unet_layer_cases(32, 64, 2)[:3]] + wide_layer_cases(16, 32, 2, (3,))
        unet_sizes = [(32, 64, 2)]
    else:
        reps, warmup = args.reps, args.warmup
        layer_cases = (
            unet_layer_cases(64, 128, 32) + unet_layer_cases(128, 256, 8)
            + wide_layer_cases(128, 256, 8, (3, 6)) + wide_layer_cases(256, 512, 8, (3, 6))
            + [dict(c, name=c["name"] + " (DISCO reduced)") for c in wide_layer_cases(64, 128, 8, (3, 6))]
        )  # fmt: skip
        unet_sizes = [(64, 128, 32), (128, 256, 8)]
    layer_cases = [case for case in layer_cases if args.filter in case["name"]]
    for case in layer_cases:
        reduced = "reduced" in case["name"]
        case["disco"] = args.disco == "all" or args.disco == "reduced" and reduced
    timer = Timer(device, warmup, reps)

    if "geometry" in sections:
        crown_taps.cache_clear()
        begin = time.perf_counter()
        crown_taps(512, 1024, math.pi / 16, (1, 1), (8, 16))
        seconds = time.perf_counter() - begin
        results["geometry"] = dict(config="512x1024 r=pi/16 (8,16)", seconds=seconds)
        print(f"geometry 512x1024 r=pi/16 (8,16): {seconds:.2f} s", flush=True)
    if "kernels" in sections and sconv_impl.triton_available(device, torch.float32):
        results["kernels"] = run_kernel_split(device, timer)
    if "layers" in sections:
        results["layers"] = []
        for case in layer_cases:
            for dtype in args.dtypes:
                row = run_layer_case(case, device, dtype, timer, args)
                results["layers"].append(row)
                print(
                    f"{row['name']:32s} B={row['batch']:<3d} {dtype} {row['path']:13s} ours {row['ours_ms']:9.3f} ms"
                    f" (fwd {row['ours_fwd_ms']:.3f})"
                    f"  conv2d k={row['planar_k']:<3d} {row['conv2d_ms']:8.3f} ms  ratio {row['ratio_vs_conv2d']:6.2f}"
                    + (f"  DISCO {row['disco_ms']:.1f} ms" if "disco_ms" in row else "")
                    + (f"  paths {row['paths_ms']}" if "paths_ms" in row else ""),
                    flush=True,
                )
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if "unet" in sections:
        results["unet"] = []
        for height, width, batch in unet_sizes:
            for dtype in args.dtypes:
                row = run_unet_step(height, width, batch, device, dtype, timer)
                results["unet"].append(row)
                print(f"U-Net {height}x{width} B={batch} {dtype}: time ratio {row['time_ratio']:.2f}", flush=True)
    if "cpu-unet" in sections:
        results["cpu_unet"] = run_cpu_unet(64, 128, reps=3 if args.quick else 10)
        print(f"CPU U-Net forward ratio {results['cpu_unet']['ratio']:.2f}", flush=True)

    table = tables(results)
    print(table)
    if args.out:
        write_atomic(os.path.join(args.out, "bench.json"), json.dumps(results, indent=1))
        write_atomic(os.path.join(args.out, "bench.md"), table + "\n")


if __name__ == "__main__":
    main()

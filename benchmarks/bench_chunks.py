"""The sparse formulations' chunk size against time and peak memory (issue 24, item 3: the U-Net's peak memory).

mix_first and project_first build a node-expanded intermediate ``kh kw`` times a layer's activations (conv4 and conv6
of the U-Net: 2**27 elements at 64x128, batch 32, and at 128x256, batch 8) and run over chunks of images so that at
most ``conv_sparse.CHUNK_ELEMENTS`` of it exist at once, unless a chunk would give the CSR kernel fewer than
``MIN_CHUNK_LANES`` (image, channel) lanes. This script times, for each (elements, lanes) setting given, the U-Net
training step (eager and with the model graphed, as ``train_unet.py --cuda-graph``) and the U-Net's sparse layer rows
(fwd+bwd, eager and graphed), with their peak memory, against the planar twin and cuDNN in the same process.

Usage (GPU machine, from the repository root):
    python benchmarks/bench_chunks.py --out DIR --settings 134217728:1024 33554432:256 16777216:128
"""

import argparse
import datetime
import json
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_sconv import (  # noqa: E402
    Timer,
    graphed,
    layer_pair,
    layer_step,
    unet_layer_cases,
    unet_training_step,
    write_atomic,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sconv.functional import conv_cost, conv_sparse  # noqa: E402


def parse_setting(text):
    """``ELEMENTS:LANES`` -> ``(elements, lanes)``."""
    try:
        elements, lanes = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setting is ELEMENTS:LANES (two integers), got {text!r}") from None
    if elements < 1 or lanes < 1:
        raise argparse.ArgumentTypeError(f"ELEMENTS and LANES must be >= 1, got {text!r}")
    return elements, lanes


def chunked(setting):
    """Context manager running the sparse formulations with ``setting = (elements, lanes)``."""

    class Chunked:
        def __enter__(self):
            self.saved = conv_sparse.CHUNK_ELEMENTS, conv_sparse.MIN_CHUNK_LANES
            conv_sparse.CHUNK_ELEMENTS, conv_sparse.MIN_CHUNK_LANES = setting

        def __exit__(self, *exc):
            conv_sparse.CHUNK_ELEMENTS, conv_sparse.MIN_CHUNK_LANES = self.saved

    return Chunked()


def unet_rows(sizes, dtypes, settings, timer):
    rows = []
    for height, width, batch in sizes:
        for dtype in dtypes:
            planar = {}
            for graph_model in (False, True):
                planar[graph_model] = timer(unet_training_step(height, width, batch, timer.device, dtype, False,
                                                               graph_model)[1])  # fmt: skip
            for setting in settings:
                with chunked(setting):
                    eager_ms, eager_mb = timer(unet_training_step(height, width, batch, timer.device, dtype, True)[1])
                    graph_ms = timer(unet_training_step(height, width, batch, timer.device, dtype, True, True)[1])[0]
                row = dict(
                    size=f"{height}x{width}", batch=batch, dtype=dtype, chunk_elements=setting[0],
                    min_lanes=setting[1], ms=eager_ms, peak_mb=eager_mb, graphed_ms=graph_ms,
                    planar_ms=planar[False][0], planar_peak_mb=planar[False][1], planar_graphed_ms=planar[True][0],
                    time_ratio=eager_ms / planar[False][0], graphed_time_ratio=graph_ms / planar[True][0],
                    memory_ratio=eager_mb / planar[False][1],
                )  # fmt: skip
                rows.append(row)
                print("unet", row, flush=True)
                torch.cuda.empty_cache()
    return rows


def layer_rows(cases, dtypes, settings, timer):
    rows = []
    device = timer.device
    for case in cases:
        for dtype in dtypes:
            triton_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
            path = conv_cost.choose_path(case["batch"], case["c_in"], case["c_out"], case["height"], case["width"],
                                         case["kernel_rad"], (1, 1), tuple(case["kernel_size"]),
                                         triton_dtype)  # fmt: skip
            if path == "gather":
                continue
            ours, planar, x, _ = layer_pair(case, device)
            k = planar.kernel_size[0]
            conv_ms, conv_mb = timer(layer_step(planar, x, device, dtype))
            conv_graph_ms = timer(graphed(layer_step(planar, x, device, dtype)))[0]
            for setting in settings:
                with chunked(setting):
                    ms, mb = timer(layer_step(ours, x, device, dtype))
                    graph_ms = timer(graphed(layer_step(ours, x, device, dtype)))[0]
                row = dict(
                    name=case["name"], batch=case["batch"], dtype=dtype, path=path, chunk_elements=setting[0],
                    min_lanes=setting[1], ms=ms, mb=mb, graphed_ms=graph_ms, conv2d_k=k, conv2d_ms=conv_ms,
                    conv2d_mb=conv_mb, conv2d_graphed_ms=conv_graph_ms, ratio=ms / conv_ms,
                    graphed_ratio=graph_ms / conv_graph_ms,
                )  # fmt: skip
                rows.append(row)
                print("layer", row, flush=True)
            torch.cuda.empty_cache()
    return rows


def table(results):
    lines = [
        f"{results['environment']['device']}, torch {results['environment']['torch']}, "
        f"{results['environment']['date']}",
        "",
        "| U-Net step | B | dtype | chunk elements : lanes | ms | graphed ms | MB | planar ms | planar graphed ms | "
        "planar MB | time ratio | graphed time ratio | memory ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["unet"]:
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['dtype']} | 2^{r['chunk_elements'].bit_length() - 1} : "
            f"{r['min_lanes']} | {r['ms']:.2f} | {r['graphed_ms']:.2f} | {r['peak_mb']:.0f} | {r['planar_ms']:.2f} | "
            f"{r['planar_graphed_ms']:.2f} | {r['planar_peak_mb']:.0f} | {r['time_ratio']:.2f} | "
            f"{r['graphed_time_ratio']:.2f} | {r['memory_ratio']:.2f} |"
        )
    lines += [
        "",
        "| layer | B | dtype | path | chunk elements : lanes | ms | graphed ms | MB | conv2d k | conv2d ms | "
        "conv2d graphed ms | conv2d MB | ratio | graphed ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["layers"]:
        lines.append(
            f"| {r['name']} | {r['batch']} | {r['dtype']} | {r['path']} | 2^{r['chunk_elements'].bit_length() - 1} "
            f": {r['min_lanes']} | {r['ms']:.2f} | {r['graphed_ms']:.2f} | {r['mb']:.0f} | {r['conv2d_k']} | "
            f"{r['conv2d_ms']:.2f} | {r['conv2d_graphed_ms']:.2f} | {r['conv2d_mb']:.0f} | {r['ratio']:.2f} | "
            f"{r['graphed_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for chunks.json and chunks.md")
    parser.add_argument("--settings", type=parse_setting, nargs="+", required=True, metavar="ELEMENTS:LANES")
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=("fp32", "bf16"))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-layers", action="store_true", help="only the U-Net step")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("the sparse formulations' chunks exist on CUDA only: run this on the GPU machine")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True  # "fp32 (TF32 allowed)", for both sides
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    timer = Timer(device, args.warmup, args.reps)
    results = dict(
        environment=dict(
            device=torch.cuda.get_device_name(device),
            torch=torch.__version__,
            python=platform.python_version(),
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        ),
        args=vars(args),
    )
    results["unet"] = unet_rows([(64, 128, 32), (128, 256, 8)], args.dtypes, args.settings, timer)
    cases = unet_layer_cases(64, 128, 32) + unet_layer_cases(128, 256, 8)
    results["layers"] = [] if args.skip_layers else layer_rows(cases, args.dtypes, args.settings, timer)
    text = table(results)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "chunks.json"), json.dumps(results, indent=1))
    write_atomic(os.path.join(args.out, "chunks.md"), text + "\n")


if __name__ == "__main__":
    main()

"""Where the time of one ``SphericalConv`` fwd+bwd step goes, kernel by kernel (CUDA, torch.profiler).

For each layer case of ``bench_sconv.py`` (or those whose name contains ``--filter``) and dtype: the step's median time
(CUDA events) and the GPU time of each kernel per step, largest first, so that a change to the Triton kernels or to
the glue around them (layout copies, padding, building E) can be aimed at what costs.

Usage (GPU machine, from the repository root):
    python benchmarks/profile_sconv.py --filter "64x128" --dtypes bf16
"""

import argparse
import collections
import functools
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_sconv import Timer, layer_step, unet_layer_cases, unet_training_step, wide_layer_cases  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sconv.module.sconv import SphericalConv  # noqa: E402


def kernel_times(step, steps):
    """GPU milliseconds per step of each kernel name run by ``step``."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    totals = collections.Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name[:60]] += event.device_time / 1e3 / steps
    return totals


def host_times(step, steps, top):
    """Host milliseconds per step (no synchronisation: what launching costs) and the costliest host ops."""
    torch.cuda.synchronize()
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    host_ms = (time.perf_counter() - begin) * 1e3 / steps
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return host_ms, [(e.key[:60], e.self_cpu_time_total / 1e3 / steps, e.count // steps) for e in ops]


def host_parts(reps=300):
    """Host microseconds per call of each piece of the Triton path (batch 1, 64x128, 4->64: the GPU is never the
    bottleneck), against nn.Conv2d and single torch ops."""
    import math

    from sconv.functional import conv_gather as T
    from sconv.functional.conv_cost import choose_path
    from sconv.functional.conv_layout import wrap_pad
    from sconv.functional.conv_plans import triton_plan

    device = torch.device("cuda")
    layer = SphericalConv(4, 64, math.pi / 32, kernel_size=(8, 16), kernel_sr=None).to(device)
    planar = torch.nn.Conv2d(4, 64, 7, padding=3, bias=False).to(device)
    x = torch.randn(1, 4, 64, 128, device=device)
    xg = x.clone().requires_grad_()
    rad, size = layer.kernel_rad, (8, 16)
    plan = triton_plan(64, 128, rad, (1, 1), size, device)
    pad = (plan.window.pad_left, plan.window.pad_right)
    x_cl = wrap_pad(x, *pad, torch.float32, channels_last=True)
    kernel = torch.randn(plan.tap_row.shape[0], 64, 4, device=device)
    grad_y = torch.randn(1, 64, 64, 128, device=device)
    grad_y_cl = wrap_pad(grad_y, 0, 0, torch.float32, channels_last=True)
    grad_x = torch.empty_like(x)
    out = layer(xg)

    def fwd_bwd(module):
        torch.autograd.grad(module(xg), [xg, *module.parameters()], grad_y)

    parts = {
        "torch.empty": lambda: torch.empty(64, 64, device=device),
        "nn.Conv2d forward": lambda: planar(x),
        "nn.Conv2d fwd+bwd": lambda: fwd_bwd(planar),
        "SphericalConv forward": lambda: layer(x),
        "SphericalConv fwd+bwd": lambda: fwd_bwd(layer),
        "choose_path": lambda: choose_path(1, 4, 64, 64, 128, rad, (1, 1), size, torch.float32),
        "triton_plan": lambda: triton_plan(64, 128, rad, (1, 1), size, device),
        "wrap_pad": lambda: wrap_pad(x, *pad, torch.float32, channels_last=True),
        "crown_gather": lambda: T.crown_gather(x, layer.weight, layer.bias, plan, 128, 1, pad),
        "_launch_forward": lambda: T._launch_forward(x_cl, kernel, layer.bias, plan, 128, 1),
        "_launch_grad_input": lambda: T._launch_grad_input(grad_y_cl, kernel, plan, grad_x, 1, True),
        "_launch_grad_kernel": lambda: T._launch_grad_kernel(x_cl, grad_y, plan, kernel.shape, 1, False),
        "autograd.grad of layer output": lambda: torch.autograd.grad(layer(xg), [xg], grad_y),
    }
    del out
    for name, fn in parts.items():
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        begin = time.perf_counter()
        for _ in range(reps):
            fn()
        host = (time.perf_counter() - begin) / reps * 1e6
        torch.cuda.synchronize()
        print(f"  host {host:8.1f} us  {name}")
    with profile(activities=[ProfilerActivity.CPU], with_stack=False) as prof:
        for _ in range(20):
            fwd_bwd(layer)
    for event in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:14]:
        print(f"  {event.self_cpu_time_total / 20:8.1f} us x{event.count // 20} {event.key[:60]}")


def memory_trace(height, width, batch, dtype, spherical):
    """Allocated and peak MB around each child module's forward and backward in one U-Net training step: which layer
    sets the step's peak, and how much of it is that layer's transient work against what is held across layers."""
    model, step = unet_training_step(height, width, batch, torch.device("cuda"), dtype, spherical)
    marks = []

    def mark(label):
        marks.append((label, torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20))
        torch.cuda.reset_peak_memory_stats()

    step()  # momentum buffers, caches
    handles = []
    for name, module in model.named_children():
        handles += [
            module.register_forward_pre_hook(lambda *a, n=name: mark(f"{n} fwd")),
            module.register_full_backward_pre_hook(lambda *a, n=name: mark(f"{n} bwd")),
        ]
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    step()
    mark("end")
    for handle in handles:
        handle.remove()
    kind = "spherical" if spherical else "planar"
    print(
        f"{kind} {height}x{width} B={batch} {dtype}: base {base:.0f} MB, step peak above base "
        f"{max(m[2] for m in marks) - base:.0f} MB"
    )
    for (label, _, _), (_, allocated, peak) in zip([("start", base, base)] + marks, marks):
        print(f"    {label:10s} then: allocated {allocated - base:7.0f}  peak {peak - base:7.0f}")


def saved_tensor_bytes(model, run):
    """What ``run()`` (a forward under ``model``) saves for the backward pass, by the child module of ``model`` that
    was running (``'-'``: between children) and dtype: ``{(module, dtype): bytes}``, each storage counted once (for
    the first module that saved it) and the model's parameters left out (they are held anyway)."""
    held = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, totals, current = set(), collections.Counter(), ["-"]

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in held and key not in seen:
            seen.add(key)
            totals[(current[0], str(tensor.dtype).replace("torch.", ""))] += storage.nbytes()
        return tensor

    def enter(name):
        return lambda *args: current.__setitem__(0, name)

    handles = []
    for name, module in model.named_children():
        handles += [
            module.register_forward_pre_hook(enter(name)),
            module.register_forward_hook(lambda *args: current.__setitem__(0, "-")),
        ]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            run()
    finally:
        for handle in handles:
            handle.remove()
    return dict(totals)


def saved_tensor_table(height, width, batch, dtype):
    """The spherical U-Net's and its planar twin's saved tensors (``saved_tensor_bytes``), MB per module and dtype,
    side by side: which layers hold more for the backward pass than their planar twins."""
    from bench_sconv import autocast

    device = torch.device("cuda")
    frame = torch.randn(batch, 3, height, width, device=device)
    previous = torch.rand(batch, 1, height, width, device=device)

    def forward(model):
        with autocast(device, dtype):
            model(frame, previous).float().sum()

    rows = {}
    for spherical in (True, False):
        model, _ = unet_training_step(height, width, batch, device, dtype, spherical)
        rows[spherical] = saved_tensor_bytes(model, functools.partial(forward, model))
        del model
    keys = sorted(set(rows[True]) | set(rows[False]))
    print(f"saved for backward {height}x{width} B={batch} {dtype}: MB spherical / planar")
    for key in keys:
        ours, planar = rows[True].get(key, 0) / 2**20, rows[False].get(key, 0) / 2**20
        print(f"    {key[0]:8s} {key[1]:9s} {ours:8.1f} {planar:8.1f}")
    totals = [sum(rows[s].values()) / 2**20 for s in (True, False)]
    print(f"    {'total':18s} {totals[0]:8.1f} {totals[1]:8.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=("fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--host", action="store_true", help="also the host time per step and its costliest ops")
    parser.add_argument("--host-parts", action="store_true", help="only the host cost of each piece, batch 1")
    parser.add_argument(
        "--memory", action="store_true",
        help="only the U-Net step's memory, module by module, and what each module saves for the backward pass",
    )  # fmt: skip
    args = parser.parse_args()
    if args.host_parts:
        host_parts()
        return
    if args.memory:
        for height, width, batch in ((64, 128, 32), (128, 256, 8)):
            for dtype in args.dtypes:
                for spherical in (True, False):
                    memory_trace(height, width, batch, dtype, spherical)
                saved_tensor_table(height, width, batch, dtype)
        return
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cases = (
        unet_layer_cases(64, 128, 32) + unet_layer_cases(128, 256, 8)
        + wide_layer_cases(128, 256, 8, (3, 6)) + wide_layer_cases(256, 512, 8, (3, 6))
    )  # fmt: skip
    timer = Timer(device, warmup=2, reps=10)
    for case in cases:
        if args.filter not in case["name"]:
            continue
        layer = SphericalConv(
            case["c_in"], case["c_out"], case["kernel_rad"], kernel_size=tuple(case["kernel_size"]), kernel_sr=None
        ).to(device)
        x = torch.randn(case["batch"], case["c_in"], case["height"], case["width"], device=device, requires_grad=True)
        for dtype in args.dtypes:
            step = layer_step(layer, x, device, dtype)
            ms = timer(step)[0]
            totals = kernel_times(step, args.steps)
            print(f"{case['name']} B={case['batch']} {dtype}: {ms:.3f} ms (kernels {sum(totals.values()):.3f})")
            for name, t in totals.most_common(args.top):
                print(f"    {t:7.3f}  {name}")
            if args.host:
                host_ms, ops = host_times(step, args.steps, args.top)
                print(f"  host {host_ms:.3f} ms per step")
                for name, t, count in ops:
                    print(f"    {t:7.3f}  {name} (x{count})")
        del layer, x
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

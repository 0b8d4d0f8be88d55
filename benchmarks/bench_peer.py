"""Benchmark: the peer, torch-harmonics' DISCO convolution, on its own published configurations and on ours.

torch-harmonics comes from its newest 0.9.x tag, exported into ``.th_src/`` (``.th_src/TH_TAG``) and built on the
GPU machine for sm_90a by ``tools/build_torch_harmonics.sh`` (put its target folder on ``PYTHONPATH``).

- **published** (run second, so that ``--budget-s`` cuts its tail): every DISCO entry of torch-harmonics' own
  benchmark suite (``.th_src/benchmarks/disco.py``, the ``_fused`` variants included), set up, run and timed by that
  suite's own code (``bench.run_entry``: warm-up steps, then the mean of CUDA-event-timed forwards and, separately,
  of backwards on a rebuilt graph), next to the figures its ``reference_results.csv`` gives for the same entry on
  the same GPU model (``--reference-arch``). Entries whose reference forward+backward exceeds ``--slow-ms`` run with
  ``--slow-iters`` timed steps and one warm-up.
- **ours**: bench_sconv's 64->64 cases (B=8, 128x256 and 256x512, crown radius 3 and 6 row spacings), DISCO in
  bench_sconv's setting (piecewise-linear basis ``DISCO_KERNEL_SHAPE``, ``theta_cutoff`` = the crown radius, no bias)
  plain and ``fused``, against ``SphericalConv``, fp32 (TF32 allowed, as bench_sconv) and bf16 autocast, with
  bench_sconv's own ``Timer`` (median) and ``layer_step`` (fwd+bwd, input gradient included) and a forward alone.

Each DISCO row records the branch torch-harmonics' forward takes (its own selection, read off the module: WGMMA
"kpacked" forward, CSR CUDA kernels, or the torch path) and, on CUDA, the kernels one profiled fwd+bwd launched.

Usage (from the repository root):
    bash tools/build_torch_harmonics.sh /tmp/th && PYTHONPATH=/tmp/th python benchmarks/bench_peer.py --out results/
    python benchmarks/bench_peer.py --quick             # CPU smoke run (seconds): small shapes, torch path

torch-harmonics 0.9.x imports only with its compiled helper modules, so ``--quick`` too needs a build (a CPU-only
one will do: ``TH_CUDA=0 bash tools/build_torch_harmonics.sh /tmp/th``). Writes ``peer.json`` and ``peer.md`` into
``--out`` after every entry (a run cut short keeps what it measured) and prints the tables.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TH_SRC = os.path.join(ROOT, ".th_src")
sys.path.insert(0, HERE)

import bench_sconv  # noqa: E402

from sconv.module.sconv import SphericalConv  # noqa: E402

# Where the reference figures come from (git blame of benchmarks/reference_results.csv at tag v0.9.2): the H100 and
# GB200 rows were recorded 2026-06-29 (commit dd5b6b6 of 2026-07-09), before the WGMMA "kpacked" DISCO forward
# (commit c2aac8a, #223, 2026-07-13); the GB300 rows 2026-08-03 (commit bf024e3, #233).
REFERENCE_DATES = {
    "NVIDIA H100 80GB HBM3": "2026-06-29 (commit dd5b6b6), before the WGMMA forward (#223, 2026-07-13)",
    "NVIDIA GB200": "2026-06-29 (commit dd5b6b6)",
    "NVIDIA GB300": "2026-08-03 (commit bf024e3)",
}
DEFAULT_REFERENCE_ARCH = "NVIDIA H100 80GB HBM3"
HALF = (torch.float16, torch.bfloat16)


def import_torch_harmonics():
    """torch_harmonics, or an exit that says how to build it (0.9.x imports only with its compiled helpers)."""
    try:
        import torch_harmonics
    except ImportError as error:
        sys.exit(
            f"torch_harmonics does not import ({error}). Build it: bash tools/build_torch_harmonics.sh /tmp/th "
            "(TH_CUDA=0 for a CPU-only build), then PYTHONPATH=/tmp/th."
        )
    return torch_harmonics


def kernel_flags():
    """Which of torch-harmonics' compiled kernel families this build holds."""
    import disco_helpers

    names = ("optimized_kernels_is_available", "cuda_kernels_is_available", "kpacked_sm90_kernels_is_available")
    return {name.replace("_is_available", ""): bool(getattr(disco_helpers, name, lambda: False)()) for name in names}


def disco_path(conv, x, autocast_dtype=None):
    """The branch ``DiscreteContinuousConvS2.forward`` (torch-harmonics 0.9.2) takes for ``x``, read off the module
    with the tests that forward makes (kpacked = the WGMMA forward of disco_cuda_fwd_dense_kpacked_sm90.cu)."""
    if not conv.optimized_kernel:
        return "torch (sparse psi contraction)"
    dtype = autocast_dtype if (x.is_cuda and autocast_dtype is not None) else x.dtype
    kpacked = (
        getattr(conv, "psi_kpacked_K_pad", None) in (8, 16) and dtype in HALF and x.is_cuda
        and conv.nlon_out % 8 == 0 and conv.nlon_in % conv.nlon_out == 0
        and getattr(conv, "kpacked_device_supported", False)
    )  # fmt: skip
    fwd = "kpacked WGMMA fwd" if kpacked else ("CSR CUDA fwd" if x.is_cuda else "CSR CPU fwd")
    if getattr(conv, "fused", False):
        return f"fused, {fwd}"
    if getattr(conv, "_save_x_spatial_first_ok", False):
        return f"save-x (spatial-first dgrad), {fwd}"
    return f"contraction + einsum, {fwd}"


def profiled_kernels(step, device, top=6):
    """The GPU kernels one call of ``step`` launches: the ``top`` by GPU time (name cut at 90 characters, ms)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        ms = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if ms:
            rows.append((ms / 1e3, event.key))
    rows.sort(reverse=True)
    return [dict(name=name[:90], ms=round(ms, 4)) for ms, name in rows[:top]]


def load_reference(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def reference_row(rows, name, arch):
    for row in rows:
        if row["name"] == name and row["architecture"] == arch:
            return row
    return None


def as_float(value):
    return float(value) if value not in (None, "", "None") else None


def compare_with_reference(row, reference, arch):
    """Set ``row``'s reference figures (``reference_results.csv``, GPU ``arch``) and, once it holds our timings, the
    speed-ups (reference ms / ours)."""
    ref = reference_row(reference, row["name"], arch)
    ref_fwd, ref_bwd = (as_float(ref["fwd_ms"]), as_float(ref["bwd_ms"])) if ref else (None, None)
    row.update(ref_arch=arch if ref else None, ref_fwd_ms=ref_fwd, ref_bwd_ms=ref_bwd)
    if ref_fwd is not None and row.get("fwd_ms"):
        row["fwd_speedup_vs_ref"] = ref_fwd / row["fwd_ms"]
        row["bwd_speedup_vs_ref"] = ref_bwd / row["bwd_ms"] if ref_bwd and row.get("bwd_ms") else None
    return row


def import_th_suite():
    """torch-harmonics' own benchmark modules (``bench``: runner; ``disco``: its DISCO configurations)."""
    sys.path.insert(0, os.path.join(TH_SRC, "benchmarks"))
    try:
        import bench as th_bench
        import disco as th_disco
    finally:
        sys.path.pop(0)
    return th_bench, th_disco


def published_configs(th_disco, quick):
    """torch-harmonics' DISCO entries as its suite expands them (plain + fused). ``quick``: the first two, shrunk
    ten-fold in each grid dimension, 8 channels, fp32, on the CPU and on the torch path."""
    configs = list(th_disco._expanded_disco_configs(th_disco._DISCO_CONFIGS))
    if not quick:
        return configs
    small = []
    for cfg in [c for c in configs if not c["fused"]][:2]:
        cfg = dict(cfg, device="cpu", dtype=torch.float32, in_ch=8, out_ch=8, optimized=False, groups=1)
        for key in ("nlat_in", "nlon_in", "nlat_out", "nlon_out"):
            cfg[key] = max(8, cfg[key] // 10)
        cfg["theta_cutoff"] *= 10
        small.append(cfg)
    return small


def run_published(args, th_bench, th_disco, reference, arch, device, record, deadline):
    rows = []
    for cfg in published_configs(th_disco, args.quick):
        if args.filter not in cfg["name"]:
            continue
        row = dict(name=cfg["name"], dtype=str(cfg["dtype"]).replace("torch.", ""), fused=cfg["fused"],
                   batch=cfg["batch"], c_in=cfg["in_ch"], c_out=cfg["out_ch"], groups=cfg.get("groups", 1),
                   grid_in=[cfg["nlat_in"], cfg["nlon_in"]], grid_out=[cfg["nlat_out"], cfg["nlon_out"]],
                   theta_cutoff=cfg["theta_cutoff"])  # fmt: skip
        compare_with_reference(row, reference, arch)
        ref_fwd, ref_bwd = row["ref_fwd_ms"], row["ref_bwd_ms"]
        if time.perf_counter() > deadline:
            row["skipped"] = "time budget (--budget-s) spent"
            rows.append(row)
            record(rows)
            continue
        slow = ref_fwd is not None and ref_bwd is not None and ref_fwd + ref_bwd > args.slow_ms
        warmup, iters = (1, args.slow_iters) if slow else (args.warmup, args.iters)
        captured = {}
        setup = th_disco._disco_setup(
            batch=cfg["batch"], in_ch=cfg["in_ch"], out_ch=cfg["out_ch"], nlat_in=cfg["nlat_in"],
            nlon_in=cfg["nlon_in"], nlat_out=cfg["nlat_out"], nlon_out=cfg["nlon_out"],
            kernel_shape=cfg["kernel_shape"], basis_type=cfg["basis_type"], basis_norm_mode=cfg["basis_norm_mode"],
            theta_cutoff=cfg["theta_cutoff"], optimized=cfg["optimized"], groups=cfg.get("groups", 1),
            fused=cfg["fused"],
        )  # fmt: skip

        def capturing_setup(dev, dtype, setup=setup, captured=captured):
            begin = time.perf_counter()
            state = setup(dev, dtype)
            captured.update(state, setup_s=time.perf_counter() - begin)
            return state

        entry = th_bench.BenchmarkEntry(
            name=cfg["name"], device=cfg["device"], dtype=cfg["dtype"], setup=capturing_setup,
            forward=th_disco._disco_forward, backward=th_disco._disco_backward, skip_correctness=True,
        )  # fmt: skip
        try:
            result = th_bench.run_entry(entry, warmup=warmup, iters=iters, skip_reference=True)
        except Exception as error:  # noqa: BLE001 - one entry's failure (e.g. out of memory) must not end the run
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
            record(rows)
            continue
        if result is None:
            row["skipped"] = f"device {cfg['device']} not available"
            rows.append(row)
            record(rows)
            continue
        state = captured
        half = cfg["dtype"] if cfg["dtype"] in HALF else None
        row.update(
            device=result.arch, warmup=warmup, iters=iters, fwd_ms=result.fwd_ms, bwd_ms=result.bwd_ms,
            fwd_bwd_ms=result.fwd_ms + result.bwd_ms, setup_s=round(state["setup_s"], 2),
            path=disco_path(state["conv"], state["x"], half),
        )  # fmt: skip
        compare_with_reference(row, reference, arch)
        if args.profile and device.type == "cuda":

            def step(state=state):
                out = th_disco._disco_forward(state)
                th_disco._disco_backward(state, out)

            row["kernels"] = profiled_kernels(step, device)
        del state, captured
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        record(rows)
        print(
            f"{row['name']:58s} {row['path']:42s} fwd {row['fwd_ms']:8.3f} bwd {row['bwd_ms']:8.3f} ms"
            + (f"  (ref {ref_fwd:.3f} / {ref_bwd:.3f})" if ref_fwd is not None else ""),
            flush=True,
        )
    return rows


def peer_layer(case, device, fused, optimized=True):
    """torch-harmonics' DISCO layer in bench_sconv's setting for ``case``, plain or ``fused``."""
    return bench_sconv.disco_layer(case, device, fused=fused, optimized_kernel=optimized)[0]


def run_ours(args, device, record, deadline):
    torch.backends.cuda.matmul.allow_tf32 = True  # bench_sconv's "fp32 (TF32 allowed)", for both sides
    torch.backends.cudnn.allow_tf32 = True
    if args.quick:
        cases, timer = bench_sconv.wide_layer_cases(16, 32, 2, (3,)), bench_sconv.Timer(device, 1, 2)
    else:
        cases = bench_sconv.wide_layer_cases(128, 256, 8, (3, 6)) + bench_sconv.wide_layer_cases(256, 512, 8, (3, 6))
        timer = bench_sconv.Timer(device, args.warmup, args.iters)
    rows = []
    for case in cases:
        for dtype in args.dtypes:
            row = dict(name=case["name"], batch=case["batch"], dtype=dtype, kernel_shape=bench_sconv.DISCO_KERNEL_SHAPE)
            if time.perf_counter() > deadline:
                rows.append(dict(row, skipped="time budget (--budget-s) spent"))
                record(rows)
                continue
            torch.manual_seed(0)
            x = torch.randn(case["batch"], case["c_in"], case["height"], case["width"], device=device,
                            requires_grad=True)  # fmt: skip
            size = tuple(case["kernel_size"])
            ours = SphericalConv(case["c_in"], case["c_out"], case["kernel_rad"], kernel_size=size, kernel_sr=None)
            ours = ours.to(device)
            row["ours_ms"], row["ours_mb"], row["ours_fwd_ms"] = bench_sconv.time_layer(timer, ours, x, device, dtype)
            del ours
            for fused in (False, True) if device.type == "cuda" else (False,):
                key = "disco_fused" if fused else "disco"
                try:
                    layer = peer_layer(case, device, fused, optimized=not args.quick)
                    row[f"{key}_kernel_size"] = layer.kernel_size
                    row[f"{key}_path"] = disco_path(layer, x, torch.bfloat16 if dtype == "bf16" else None)
                    timings = bench_sconv.time_layer(timer, layer, x, device, dtype)
                    row[f"{key}_ms"], row[f"{key}_mb"], row[f"{key}_fwd_ms"] = timings
                    row[f"{key}_over_ours"] = row[f"{key}_ms"] / row["ours_ms"]
                    if args.profile and device.type == "cuda":
                        step = bench_sconv.layer_step(layer, x, device, dtype)
                        row[f"{key}_kernels"] = profiled_kernels(step, device)
                    del layer
                except Exception as error:  # noqa: BLE001 - recorded, the other rows go on
                    row[f"{key}_error"] = f"{type(error).__name__}: {str(error)[:300]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(row)
            record(rows)
            print(
                f"{row['name']:24s} B={row['batch']} {dtype} ours {row['ours_ms']:8.3f} ms  DISCO "
                f"{bench_sconv.fmt(row.get('disco_ms'), 3)} ms ({row.get('disco_path')})  fused "
                f"{bench_sconv.fmt(row.get('disco_fused_ms'), 3)} ms",
                flush=True,
            )
    return rows


def tables(results):
    fmt = bench_sconv.fmt
    env = results["environment"]
    lines = [
        f"Device: {env['device']}; torch {env['torch']}; torch-harmonics {env['torch_harmonics']} "
        f"(kernels {env['th_kernels']}); {env['date']}.",
    ]
    ref = results.get("reference", {})
    if results.get("published"):
        lines += [
            "",
            "torch-harmonics' own DISCO configurations (its benchmarks/disco.py, run by its bench.run_entry; mean "
            "ms), "
            f"against its reference_results.csv for {ref.get('arch')} (recorded {ref.get('date')}):",
            "",
            "| entry | path | fwd ms | bwd ms | ref fwd ms | ref bwd ms | fwd speed-up | bwd speed-up | iters |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["published"]:
            lines.append(
                f"| {r['name']} | {r.get('path', r.get('skipped', r.get('error', '-')))} | {fmt(r.get('fwd_ms'), 3)} "
                f"| {fmt(r.get('bwd_ms'), 3)} | {fmt(r.get('ref_fwd_ms'), 3)} | {fmt(r.get('ref_bwd_ms'), 3)} | "
                f"{fmt(r.get('fwd_speedup_vs_ref'))} | {fmt(r.get('bwd_speedup_vs_ref'))} | {fmt(r.get('iters'))} |"
            )
    if results.get("ours"):
        lines += [
            "",
            "Our 64->64 cases (bench_sconv's; fwd+bwd median ms, forward alone in brackets), DISCO piecewise-linear "
            f"{bench_sconv.DISCO_KERNEL_SHAPE} with theta_cutoff = crown radius:",
            "",
            "| case | B | dtype | ours ms | DISCO ms | DISCO path | DISCO fused ms | DISCO/ours | fused/ours |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["ours"]:
            lines.append(
                f"| {r['name']} | {r['batch']} | {r['dtype']} | {fmt(r.get('ours_ms'))} ({fmt(r.get('ours_fwd_ms'))}) "
                f"| {fmt(r.get('disco_ms'))} ({fmt(r.get('disco_fwd_ms'))}) | {r.get('disco_path', r.get('skipped'))} "
                f"| {fmt(r.get('disco_fused_ms'))} ({fmt(r.get('disco_fused_fwd_ms'))}) | "
                f"{fmt(r.get('disco_over_ours'), 1)} | {fmt(r.get('disco_fused_over_ours'), 1)} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: shrunk cases, torch path, 2 steps")
    parser.add_argument("--only", nargs="+", choices=("published", "ours"), default=("published", "ours"))
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=("fp32", "bf16"),
                        help="dtypes of the 'ours' section (the published entries carry their own)")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps (torch-harmonics' suite default: 3)")
    parser.add_argument("--iters", type=int, default=20, help="timed steps (torch-harmonics' suite default: 20)")
    parser.add_argument("--slow-ms", type=float, default=100.0,
                        help="published entries whose reference fwd+bwd exceeds this many ms run ...")  # fmt: skip
    parser.add_argument("--slow-iters", type=int, default=3, help="... with this many timed steps and 1 warm-up")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="no new entry starts after this many seconds (the rest: recorded as skipped)")  # fmt: skip
    parser.add_argument("--filter", default="", help="only published entries whose name contains this")
    parser.add_argument("--reference-csv", default=os.path.join(TH_SRC, "benchmarks", "reference_results.csv"))
    parser.add_argument("--reference-arch", default=None,
                        help=f"CSV rows of this GPU (default: this GPU's; CPU: {DEFAULT_REFERENCE_ARCH})")  # fmt: skip
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the profiled step that lists the CUDA kernels each DISCO row launched")  # fmt: skip
    parser.add_argument("--out", default=None, help="folder for peer.json and peer.md")
    parser.add_argument("--retable", default=None, metavar="PEER_JSON",
                        help="no run: an earlier peer.json against --reference-arch's rows")  # fmt: skip
    args = parser.parse_args()
    if args.retable:
        with open(args.retable) as handle:
            results = json.load(handle)
        arch = args.reference_arch or DEFAULT_REFERENCE_ARCH
        reference = load_reference(args.reference_csv)
        for row in results.get("published", []):
            compare_with_reference(row, reference, arch)
        results["reference"].update(arch=arch, date=REFERENCE_DATES.get(arch))
        table = tables(results)
        print(table)
        if args.out:
            bench_sconv.write_atomic(os.path.join(args.out, "peer.json"), json.dumps(results, indent=1))
            bench_sconv.write_atomic(os.path.join(args.out, "peer.md"), table + "\n")
        return
    if args.quick:
        args.device, args.warmup, args.iters = "cpu", 1, 2
    device = torch.device(args.device)
    begin = time.perf_counter()
    deadline = begin + args.budget_s

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No optimized kernels are available" from a torch-path-only import
        th = import_torch_harmonics()
        th_bench, th_disco = import_th_suite()
    tag_file = os.path.join(TH_SRC, "TH_TAG")
    tag = open(tag_file).read().strip() if os.path.exists(tag_file) else None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    arch = args.reference_arch or gpu or DEFAULT_REFERENCE_ARCH
    reference = load_reference(args.reference_csv)
    results = dict(
        environment=dict(
            device=gpu or f"CPU ({platform.processor() or 'cpu'})", torch=torch.__version__,
            cuda=torch.version.cuda, python=platform.python_version(), torch_harmonics=th.__version__,
            torch_harmonics_tag=tag, torch_harmonics_file=th.__file__,
            th_kernels=kernel_flags(), date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            threads=torch.get_num_threads(),
        ),
        args=vars(args),
        reference=dict(csv=os.path.relpath(args.reference_csv, ROOT), arch=arch, date=REFERENCE_DATES.get(arch),
                       rows_for_arch=sum(r["architecture"] == arch and r["name"][:5] == "disco" for r in reference),
                       columns=list(reference[0].keys()) if reference else []),
    )  # fmt: skip
    if args.quick:
        results["note"] = "quick: shapes shrunk and run on the CPU; the reference figures are not comparable"

    def record(section):
        def save(rows):
            results[section] = rows
            results["elapsed_s"] = round(time.perf_counter() - begin, 1)
            if args.out:
                bench_sconv.write_atomic(os.path.join(args.out, "peer.json"), json.dumps(results, indent=1))

        return save

    print(f"torch_harmonics {th.__version__} ({th.__file__}), {results['environment']['th_kernels']}", flush=True)
    if "ours" in args.only:  # first: the smaller section, so that --budget-s cuts the published entries' tail
        run_ours(args, device, record("ours"), deadline)
    torch.backends.cuda.matmul.allow_tf32 = False  # torch-harmonics' suite runs with torch's defaults
    torch.backends.cudnn.allow_tf32 = True
    if "published" in args.only:
        run_published(args, th_bench, th_disco, reference, arch, device, record("published"), deadline)
    results["elapsed_s"] = round(time.perf_counter() - begin, 1)
    table = tables(results)
    print(table)
    if args.out:
        bench_sconv.write_atomic(os.path.join(args.out, "peer.json"), json.dumps(results, indent=1))
        bench_sconv.write_atomic(os.path.join(args.out, "peer.md"), table + "\n")


if __name__ == "__main__":
    main()

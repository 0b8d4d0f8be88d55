#!/usr/bin/env bash
# Build torch-harmonics (the tag exported into .th_src/, see .th_src/TH_TAG) with its CUDA kernels for sm_90a
# (Hopper: the WGMMA DISCO forward needs the arch-specific target) and install it into a folder, on the GPU machine.
#
# Usage (repository root, GPU machine; .th_src carried):
#     bash tools/build_torch_harmonics.sh [TARGET]        # TARGET defaults to /tmp/th
#     export PYTHONPATH=/tmp/th:$PYTHONPATH                # then torch_harmonics imports from there
# Environment:
#     TH_BUILD=parallel    (default) setup.py's four extensions (disco._C, attention._C, disco_helpers,
#                          attention_helpers) built at once, each by its own `setup.py build_ext` process with its own
#                          build folder: same sources, flags and BuildExtension as upstream, but the wall time is that
#                          of the slowest file instead of the sum over the extensions (setuptools builds them one after
#                          another, and `build_ext -j` would share one build.ninja). TH_BUILD=pip: plain pip install.
#     TH_ATTENTION_CUDA=0  skip the spherical-attention CUDA kernels (9 .cu files that DISCO does not use; the
#                          attention extension is then built from its CPU sources only). Default 1: upstream's build.
#     TH_SPLIT_COMPILE=1   nvcc -split-compile=0 (NVCC_APPEND_FLAGS): cicc/ptxas of one file on all cores. Shorter
#                          build (disco_cuda_{fwd,bwd}.cu spend minutes in ptxas), but not upstream's flags: code may
#                          differ. Default 0.
#     TH_CUDA=0            CPU-only build, on a machine whose torch has no CUDA (to test bench_peer.py --quick).
#     MAX_JOBS             ninja jobs inside each extension (default: all cores).
#     TH_LOG               prefix of the compile logs (default TARGET.log).
# Prints the version, whether the CUDA and sm_90a (kpacked/WGMMA) kernels are in, and the wall time.
set -euo pipefail

SRC=${TH_SRC:-.th_src}
TARGET=${1:-/tmp/th}
LOG=${TH_LOG:-$TARGET.log}
PY=${PYTHON:-python3}
begin=$(date +%s)
[ -f "$SRC/setup.py" ] || { echo "no $SRC/setup.py: carry .th_src" >&2; exit 2; }
fail() {  # the first errors of a log, then exit
    grep -n -i -B2 -A8 "error" "$1" | head -80
    echo "BUILD FAILED after $(( $(date +%s) - begin )) s; full log: $1" >&2
    exit 1
}

# Build in a scratch copy: build/, temporaries and *.egg-info stay out of the repository copy.
WORK=$(mktemp -d /tmp/th_build.XXXXXX)
cp -r "$SRC"/. "$WORK"/
rm -rf "$WORK/build" "$WORK"/*.egg-info

# Optional: drop the attention CUDA sources (the condition of setup.py's attention block becomes false).
if [ "${TH_ATTENTION_CUDA:-1}" = "0" ]; then
    "$PY" - "$WORK/setup.py" <<'PYEOF'
import sys

path = sys.argv[1]
text = open(path).read()
old = '    if BUILD_CUDA:\n        print("Compiling attention CUDA kernels'
assert text.count(old) == 1, "setup.py's attention block changed: patch not applied"
open(path, "w").write(text.replace(old, '    if False:\n        print("Compiling attention CUDA kernels'))
print("attention CUDA kernels skipped (TH_ATTENTION_CUDA=0)")
PYEOF
fi

# Upstream's own release-wheel settings (.github/workflows/build_wheels.yml), arch list cut to the H100's:
#   TORCH_HARMONICS_BUILD_CUDA_EXTENSION=1  CUDA extension even where torch.cuda.is_available() would say no;
#   TORCH_CUDA_ARCH_LIST=9.0a  -> -gencode=arch=compute_90a,code=sm_90a, and setup.py adds -DBUILD_KPACKED_SM90=1
#                                 (the WGMMA kpacked forward; plain "9.0" would leave it out);
#   TORCH_HARMONICS_ENABLE_OPENMP=1  as in the released wheels (CPU kernels only).
if [ "${TH_CUDA:-1}" = "1" ]; then
    export TORCH_HARMONICS_BUILD_CUDA_EXTENSION=1
    export TORCH_CUDA_ARCH_LIST="9.0a"
    command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
    if [ "${TH_SPLIT_COMPILE:-0}" = "1" ]; then export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} -split-compile=0"; fi
fi
export TORCH_HARMONICS_ENABLE_OPENMP=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

rm -rf "$TARGET"
echo "building torch-harmonics $(cat "$SRC/TH_TAG" 2>/dev/null) for ${TORCH_CUDA_ARCH_LIST:-CPU}, MAX_JOBS=$MAX_JOBS"
if [ "${TH_BUILD:-parallel}" = "pip" ]; then
    # pip without index, isolation or dependencies (torch and numpy are already there); -v keeps the compiler output.
    "$PY" -m pip install -v --no-index --no-build-isolation --no-deps --no-compile --no-cache-dir \
        --target "$TARGET" "$WORK" >"$LOG" 2>&1 || fail "$LOG"
else
    # The Python package as it is in the tree (the extensions' .so files land beside its modules), then one
    # build_ext process per extension of setup.py's own list (get_ext_modules; the variables above shape it).
    mkdir -p "$TARGET"
    cp -r "$WORK/torch_harmonics" "$TARGET"/
    find "$TARGET/torch_harmonics" \( -name '*.cu' -o -name '*.cuh' -o -name '*.cpp' -o -name '*.h' \) -delete
    cat >"$WORK/build_one.py" <<'PYEOF'
import sys

name, target, temp = sys.argv[1:4]
sys.argv = sys.argv[:1]
sys.path.insert(0, ".")
from setuptools import setup  # noqa: E402

import setup as th_setup  # noqa: E402  (the exported setup.py: its own setup() call sits under __main__)

ext_modules, cmdclass = th_setup.get_ext_modules()
chosen = [ext for ext in ext_modules if ext.name == name]
assert chosen, f"{name} not among setup.py's extensions {[ext.name for ext in ext_modules]}"
setup(ext_modules=chosen, cmdclass=cmdclass, zip_safe=False,
      script_args=["build_ext", "--build-lib", target, "--build-temp", temp])
PYEOF
    pids=()
    for ext in torch_harmonics.disco._C torch_harmonics.attention._C disco_helpers attention_helpers; do
        (cd "$WORK" && exec "$PY" build_one.py "$ext" "$TARGET" "$WORK/tmp_$ext") >"$LOG.$ext" 2>&1 &
        pids+=("$!:$ext")
    done
    for entry in "${pids[@]}"; do
        wait "${entry%%:*}" || fail "$LOG.${entry#*:}"
        echo "  ${entry#*:} built at $(( $(date +%s) - begin )) s"
    done
fi
rm -rf "$WORK"
echo "built in $(( $(date +%s) - begin )) s"

# Check: version, which kernel families are compiled in, a DISCO conv on the GPU against the torch path.
PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'PYEOF'
import warnings

import torch

warnings.simplefilter("ignore")
import disco_helpers  # noqa: E402
import torch_harmonics  # noqa: E402
from torch_harmonics import DiscreteContinuousConvS2  # noqa: E402

print(f"torch_harmonics {torch_harmonics.__version__} from {torch_harmonics.__file__}, torch {torch.__version__}")
print(f"optimized kernels: {disco_helpers.optimized_kernels_is_available()}, CUDA kernels: "
      f"{disco_helpers.cuda_kernels_is_available()}, sm90 kpacked (WGMMA): {disco_helpers.kpacked_sm90_kernels_is_available()}")
if torch.cuda.is_available():
    torch.manual_seed(0)
    args = dict(in_channels=16, out_channels=16, in_shape=(90, 180), out_shape=(90, 180), kernel_shape=(3, 3),
                basis_type="harmonic", theta_cutoff=0.05)
    fast = DiscreteContinuousConvS2(**args).cuda()
    slow = DiscreteContinuousConvS2(**args, optimized_kernel=False).cuda()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 16, 90, 180, device="cuda")
    for dtype in (torch.float32, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            y, ref = fast(x).float(), slow(x).float()
        err = ((y - ref).abs().max() / ref.abs().max()).item()
        print(f"CUDA smoke {dtype}: max rel. error against the torch path {err:.1e}, "
              f"kpacked device support {fast.kpacked_device_supported}")
PYEOF
echo "torch-harmonics ready in $TARGET ($(( $(date +%s) - begin )) s in all)"

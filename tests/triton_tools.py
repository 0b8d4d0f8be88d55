"""What the Triton kernel tests share: running a script under Triton's CPU interpreter, and compiling a kernel for an
H100 on a machine without a GPU."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def patch_interpreter():
    """Triton 3.6's interpreter calls int() on one-element arrays, which NumPy >= 2.3 refuses: take the element.
    Called first by the scripts :func:`run_in_interpreter` runs."""
    import triton.runtime.interpreter as interpreter

    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None:
        return

    def patch_index(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch_index


def run_in_interpreter(script, *args, timeout=600):
    """Run ``script`` (Python source, ``args`` as its argv) with ``TRITON_INTERPRET=1`` from the repository root; it
    prints ``ok`` last and exits 0, or lists its failures and exits 1. Skips where triton is not installed."""
    pytest.importorskip("triton", reason="the `test` extra installs triton where a wheel exists for the platform")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "ok"


def ptx_for_h100(kernel, types, aligned, constexprs, num_warps):
    """``kernel`` compiled by Triton for an H100 (sm_90) on this machine, no GPU needed; its PTX. ``types``: argument
    name -> Triton type (``'*bf16'``, ``'fp32'``; ``'i32'`` for the others); ``aligned``: the arguments specialised
    as 16-byte aligned pointers or multiples of 16; ``constexprs``: name -> value."""
    triton = pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("Triton's interpreter compiles nothing")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, attrs = {}, {}
    for index, name in enumerate(kernel.arg_names):
        signature[name] = "constexpr" if name in constexprs else types.get(name, "i32")
        if name in aligned:
            attrs[(index,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    return compiled.asm["ptx"]

"""The fused kernels' accuracy tests again under the other x86-64 codegens this CPU can run.

numba compiles for the host CPU, so the kernels' vector width, and with it the order in which their
sums round, differs between processors: an AMD Zen 4 gets 512-bit AVX-512 vectors, an Intel Xeon
256-bit ones (LLVM's tuning for Intel's AVX-512 cores prefers 256 bits), an older or smaller core
AVX2.  Each codegen gives other last bits (measured: every fused kernel's results differ between
the three), so a tolerance that held on one machine by the luck of its rounding can fail on another;
the accuracy tests' bounds are derived to hold on all of them (tests/helpers.py, ROUNDING_FACTOR),
and this test checks that they do, whatever machine CI lands on: it reruns the float32 accuracy tests
in a subprocess per codegen other than the default, selected with ``NUMBA_CPU_NAME`` and
``NUMBA_CPU_FEATURES`` (the features must be given: with the name alone numba keeps the host's
features, so ``haswell`` on an AVX-512 host still compiles 512-bit code).  Each run also moves
torch's own rounding: ATen's vectorised ops and MKL's sgemm take other code paths (the AVX2 run as
on an AVX2 machine; ``MKL_CBWR=COMPATIBLE`` in the AVX-512 run, MKL's portable sgemm, which
together with 256-bit kernels reproduced the failure of the old bound seen on an Intel Xeon).
The float64 tests are left out: their rounding is 2^29 times smaller, and the float32 tests run the
same kernel code.

Cost: numba compiles torch.nn's families' kernels again for each codegen (cached on disk afterwards);
two codegens run on a machine with AVX-512 (AVX2 and the other AVX-512 width: 41 s for both on the
AVX-512 EPYC, Zen 4, 2026-12-07), none on an AVX2-only machine (its default codegen is the AVX2 one).
This test only runs where AVX-512 is: a node it names that no longer exists failed it there alone (the
rows-split test of the removed numba cell kernels, seen on the AVX-512 EPYC in session 12).
"""
from __future__ import annotations

import os
import pathlib
import platform
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# (the generated kernels of rnnkit's cells, the numba kernels of torch.nn's families, and the C++ operators
# with the batch split across threads; each must exist: a node that is gone fails the run, as it should)
ACCURACY_TESTS = ["tests/kernels/test_fused_cells.py::test_fused_equals_reference",
                  "tests/kernels/test_fused.py::test_fused_equals_reference",
                  "tests/kernels/test_ops.py::test_batch_split_across_threads_equals_reference"]
AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}  # skylake-avx512's set
# name -> (environment, vector registers its float32 loops use, CPU features it needs)
CODEGENS = {
    "avx2": ({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "",
              "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}, "ymm", {"avx2", "fma"}),
    "avx512-256bit": ({"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": "", "MKL_CBWR": "COMPATIBLE"},
                      "ymm", AVX512),
    "avx512-512bit": ({"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": "-prefer-256-bit",
                       "MKL_CBWR": "COMPATIBLE"}, "zmm", AVX512),
}

# The widest vector registers the current codegen's float32 additions use, in a vectorised sum.
PROBE = """
import re
import numba
import numpy as np

@numba.njit(fastmath=True)
def total(v):
    s = np.float32(0)
    for i in range(v.shape[0]):
        s += v[i]
    return s

total(np.ones(64, dtype=np.float32))
asm = next(iter(total.inspect_asm().values()))
used = set(re.findall(r"vaddps\\s+%(xmm|ymm|zmm)", asm))
registers = next((r for r in ("zmm", "ymm", "xmm") if r in used), "none")
"""

# Run in the subprocess: first check that the codegen took effect, then the tests.
RUN = PROBE + """
import sys
import pytest

if registers != sys.argv[1]:
    sys.exit(f"codegen {numba.config.CPU_NAME} ({numba.config.CPU_FEATURES!r}): float32 sums on {registers}, "
             f"not {sys.argv[1]}")
sys.exit(pytest.main(sys.argv[2:]))
"""


def host_features() -> set:
    from llvmlite import binding as llvm
    return {name for name, on in llvm.get_host_cpu_features().items() if on}


def default_registers() -> str:
    """The vector registers the current codegen's float32 loops use (numba's default: the host's)."""
    scope: dict = {}
    exec(PROBE, scope)
    return scope["registers"]


@pytest.mark.parametrize("codegen", list(CODEGENS))
def test_accuracy_tests_pass_under_codegen(codegen):
    """AVX2, and the AVX-512 codegen of the other vector width than the default's (where the CPU has
    AVX-512): with the default, both AVX-512 widths and AVX2 are covered."""
    env_changes, registers, needs = CODEGENS[codegen]
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 codegens")
    if not needs <= host_features():
        pytest.skip(f"this CPU lacks {sorted(needs - host_features())}")
    if codegen.startswith("avx512") and registers == default_registers():
        pytest.skip(f"the default codegen already runs AVX-512 on {registers}")
    if codegen == "avx2" and not AVX512 & host_features():
        pytest.skip("this CPU has no AVX-512: the default codegen is the AVX2 one")
    env = {**os.environ, **env_changes}
    args = [sys.executable, "-c", RUN, registers, "-q", "-p", "no:cacheprovider", "-k", "float32",
            *ACCURACY_TESTS]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"under {codegen} ({env_changes}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"

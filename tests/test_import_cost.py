"""`import rnnkit` stays light (issue 17: it adds at most 0.3 s to `import torch`).  Measured on an AMD
EPYC Zen 4: +0.05 s, where importing torch._dynamo at import time cost +1.2 s.  A property, not a
timing: the heavy modules are imported only by what needs them (dynamo by torch.compile, numba by
the first fused call, onnx by an export, matplotlib by a plot)."""
import subprocess
import sys

HEAVY = ("torch._dynamo", "numba", "llvmlite", "torch.onnx", "onnx", "onnxruntime", "matplotlib", "triton")


def test_import_rnnkit_imports_none_of_the_heavy_modules():
    code = ("import sys, torch; before = set(sys.modules); import rnnkit; "
            f"print([m for m in {HEAVY!r} if m in sys.modules and m not in before])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", f"import rnnkit imported {res.stdout.strip()}"


def test_a_forward_still_runs_without_dynamo_imported():
    code = ("import sys, torch, rnnkit; out, _ = rnnkit.GRU(3, 4)(torch.randn(5, 2, 3)); "
            "print('torch._dynamo' in sys.modules, tuple(out.shape))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "(5,", "2,", "4)"]

"""tests/reliability: differential fuzzing, long sequences, numerics, ONNX, torch.compile,
state and copies, DDP, determinism (issue 7).

Like tests/, this folder has no __init__.py: pytest puts each test file's folder on sys.path,
so ``helpers`` (tests/helpers.py) is found through the folder added below, whether pytest runs
this folder alone or the whole suite.
"""
import pathlib
import sys

import pytest

TESTS = str(pathlib.Path(__file__).resolve().parent.parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared machine: one intra-op thread avoids thread-pool waits (and keeps
    the timings of the linear-cost checks honest).  Restored after each test."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

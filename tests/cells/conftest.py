"""tests/cells: the cells beyond torch.nn's, and the parallel-scan backend.

Like tests/, this folder has no __init__.py: pytest puts each test file's folder on sys.path,
so the tests here import ``cell_cases`` (this folder) and ``helpers`` (tests/), whose folder is
added below so that ``pytest tests/cells`` works alone as well as within the whole suite.
"""
import pathlib
import sys

import pytest

TESTS = str(pathlib.Path(__file__).resolve().parent.parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture
def scan_backend():
    """The registered "scan" kernel (MinGRU / MinLSTM parallel over time)."""
    from rnnkit import kernels

    return kernels.BACKENDS["scan"]


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: a second intra-op thread only adds synchronisation, which on a
    loaded machine (more busy processes than cores) makes each op 10-100x slower.  One thread per
    test in this folder, restored after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

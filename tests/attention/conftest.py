import pathlib
import sys

import pytest
import torch

# helpers.py (tests/): found whether pytest runs this folder alone or the whole suite (no __init__.py here)
TESTS = str(pathlib.Path(__file__).resolve().parent.parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run thousands of tiny ops: on a shared machine one thread avoids thread-pool waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run thousands of tiny ops: on a shared machine one thread avoids thread-pool waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Fixtures of the fault tests of `rnnkit train` / `predict` (helpers are in faults.py)."""
import pytest
import torch
from faults import SETTINGS, StopAt, fake_picture, result

from rnnkit.training import Interrupted, TrainConfig, plots, train


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared machine: one thread avoids thread-pool waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def quick_plots(monkeypatch):
    monkeypatch.setattr(plots, "loss_curves", fake_picture)
    monkeypatch.setattr(plots, "attention_heatmaps", fake_picture)


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run of SETTINGS (see faults.result)."""
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as one_thread sets it for the runs compared with this one: sums stay in order
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "loss_curves", fake_picture)
        mp.setattr(plots, "attention_heatmaps", fake_picture)
        train(TrainConfig(**SETTINGS), out)
    torch.set_num_threads(threads)
    return result(out)


@pytest.fixture
def stopped_run(tmp_path, quick_plots):
    """A run of SETTINGS stopped at step 2, whose checkpoint.pt holds step 2: what --resume continues."""
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as stop:
        train(TrainConfig(**SETTINGS), out, progress=StopAt(2))
    assert stop.value.step == 2
    return out

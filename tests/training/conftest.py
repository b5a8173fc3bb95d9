"""Fixtures of the fault tests of `rnnkit train` / `predict` (helpers are in faults.py)."""
import signal

import pytest
import torch
from faults import SETTINGS, StopAt, fake_picture, no_picture, result

from rnnkit.cli.main import main
from rnnkit.training import Interrupted, TrainConfig, plots, structure_plots, task_plots, train


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_delivered():
    """These tests press Ctrl-C (SIGINT). A shell starts a background job (`cmd &`) with SIGINT ignored,
    and Python then installs no handler: the presses would vanish and every interrupt test fail. Give
    the run Python's default handler, as in a foreground shell."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


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


# Every picture a run of the four structures' tasks draws (drawing would take most of a tiny run's time).
STRUCTURE_PICTURES = ((plots, "loss_curves"), (structure_plots, "structure_diagram"), (task_plots, "confusion_matrix"),
                      (task_plots, "forecast"), (task_plots, "token_probabilities"))


@pytest.fixture
def quick_structure_pictures(monkeypatch):
    for module, name in STRUCTURE_PICTURES:
        monkeypatch.setattr(module, name, no_picture)


# The one-step runs `checkpoints` makes: each task with its defaults, and the two N-1 tasks with attention pooling.
ONE_STEP_RUNS = {"digits": ["--task", "digits"], "date-tags": ["--task", "date-tags"],
                 "spell-numbers": ["--task", "spell-numbers"], "forecast": ["--task", "forecast"],
                 "digits-attention": ["--task", "digits", "--attention", "additive"],
                 "forecast-attention": ["--task", "forecast", "--attention", "additive"]}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """One-step runs of the tasks of the four structures (ONE_STEP_RUNS): enough for predict to read."""
    root = tmp_path_factory.mktemp("one-step")
    with pytest.MonkeyPatch.context() as mp:
        for module, name in STRUCTURE_PICTURES:
            mp.setattr(module, name, no_picture)
        for run, options in ONE_STEP_RUNS.items():
            assert main(["train", "--out", str(root / run), "--steps", "1", "--hidden", "8", "--batch-size", "4",
                         "--eval-size", "4", "--quiet"] + options) == 0
    return root

"""Ctrl-C anywhere inside a training step: the checkpoint holds one step boundary (step, weights,
Adam's moments, RNG, logs together), and --resume ends exactly where the uninterrupted run ends."""
import signal

import pytest
import torch
from faults import SETTINGS, assert_same_result, result

import rnnkit.training.trainer as trainer
from rnnkit.training import Interrupted, TrainConfig, train
from rnnkit.training.date_task import DatesTask
from rnnkit.training.distributed import Context
from rnnkit.training.interrupts import InterruptGate

STEP = 4  # the interrupt lands inside this step (1-based); SETTINGS checkpoints every 2 steps, runs 5

# Everything a step calls, in order; the interrupt is injected just before or just after each call.
POINTS = {
    "batch": (DatesTask, "batch"),
    "forward": (DatesTask, "loss_terms"),
    "backward": (torch.Tensor, "backward"),
    "clip": (torch.nn.utils, "clip_grad_norm_"),
    "lr": (trainer, "lr_at"),
    "optimizer.step": (torch.optim.Adam, "step"),
    "zero_grad": (torch.optim.Adam, "zero_grad"),
    "evaluate": (DatesTask, "evaluate"),
    "sum over ranks": (Context, "sum"),
    "progress": None,  # the progress hook, below
    "checkpoint write": (torch, "save"),
}


def press_ctrl_c():
    signal.raise_signal(signal.SIGINT)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt  # as a hook would: no signal, so nothing can hold it back


class Trigger:
    """Fires once, at the first call of a point during step STEP (DatesTask.batch tells the step)."""

    def __init__(self, action):
        self.action, self.step, self.fired = action, None, False

    def __call__(self):
        if not self.fired and self.step is not None and self.step >= STEP - 1:
            self.fired = True
            self.action()


class Progress:
    def __init__(self, trigger):
        self.trigger = trigger

    def start(self, total, done):
        pass

    def update(self, step, row):
        self.trigger()

    def stop(self):
        pass


def inject(monkeypatch, point, when, trigger):
    """Wrap the chosen call to fire the trigger; then DatesTask.batch, outermost, records the step."""
    progress = None
    if POINTS[point] is None:
        progress = Progress(trigger)
    else:
        owner, name = POINTS[point]
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if when == "before":
                trigger()
            out = original(*args, **kwargs)
            if when == "after":
                trigger()
            return out
        monkeypatch.setattr(owner, name, wrapped)
    batch = DatesTask.batch

    def recording_batch(self, step, *args, **kwargs):
        trigger.step = step
        return batch(self, step, *args, **kwargs)
    monkeypatch.setattr(DatesTask, "batch", recording_batch)
    return progress


def interrupted_then_resumed(monkeypatch, tmp_path, point, when, action):
    out = tmp_path / "run"
    trigger = Trigger(action)
    with monkeypatch.context() as m:
        progress = inject(m, point, when, trigger)
        with pytest.raises(Interrupted) as stop:
            train(TrainConfig(**SETTINGS), out, progress=progress)
    assert trigger.fired
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == stop.value.step
    train(TrainConfig(**SETTINGS), out, resume=True)
    return stop.value


@pytest.mark.parametrize("point, when", [(p, w) for p in POINTS for w in ("before", "after")
                                         if POINTS[p] is not None or w == "after"])
def test_ctrl_c_anywhere_in_a_step_stops_at_its_end_and_resumes_exactly(monkeypatch, tmp_path, quick_plots,
                                                                         reference, point, when):
    stop = interrupted_then_resumed(monkeypatch, tmp_path, point, when, press_ctrl_c)
    assert stop.step == STEP  # the step the Ctrl-C landed in was completed, and saved
    assert_same_result(tmp_path / "run", reference)


@pytest.mark.parametrize("point", list(POINTS))
def test_a_raised_keyboard_interrupt_never_saves_a_torn_step(monkeypatch, tmp_path, quick_plots, reference,
                                                             point):
    """No signal to hold back: before the update the step's start is saved, during or after it (until
    the step's logs are kept) the last checkpoint stays; either way --resume ends where it should."""
    stop = interrupted_then_resumed(monkeypatch, tmp_path, point, "after", raise_keyboard_interrupt)
    assert stop.step in (STEP - 2, STEP - 1, STEP)  # the last periodic checkpoint, or a whole step
    assert_same_result(tmp_path / "run", reference)


def test_second_ctrl_c_does_not_wait_but_never_splits_a_held_section():
    with InterruptGate(wait_for_boundary=True) as gate:
        press_ctrl_c()
        assert gate.requested  # recorded, not raised
        with gate.held():
            press_ctrl_c()  # inside a held section even a second one waits
        with pytest.raises(KeyboardInterrupt):
            press_ctrl_c()
    with InterruptGate(wait_for_boundary=False) as gate:
        with gate.held():
            press_ctrl_c()
        assert gate.requested
        with pytest.raises(KeyboardInterrupt):
            press_ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_ctrl_c_between_log_lines_then_resume_logs_what_an_uninterrupted_run_logs(monkeypatch, tmp_path,
                                                                                 quick_plots):
    """Logs every 3 steps, Ctrl-C in step 5: the resumed run's row at step 6 still sums steps 4 to 6."""
    settings = {**SETTINGS, "log_every": 3, "eval_every": 3, "steps": 7, "checkpoint_every": 100}
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(TrainConfig(**settings), whole)
    trigger = Trigger(press_ctrl_c)
    with monkeypatch.context() as m:
        inject(m, "batch", "before", trigger)
        with pytest.raises(Interrupted) as stop:
            train(TrainConfig(**settings), parts)
    assert stop.value.step == STEP and STEP % 3 != 0  # a step with no log line
    train(TrainConfig(**settings), parts, resume=True)
    assert_same_result(parts, result(whole))

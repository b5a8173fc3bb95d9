"""--resume of each task of the four structures: a run stopped by Ctrl-C and continued ends with the weights,
Adam's moments, logs and metrics of the run that was never stopped (each batch is a function of the seed
and the step alone)."""
import json

import pytest
import torch
from faults import TIMING, StopAt

from rnnkit.cli.main import main
from rnnkit.training import Interrupted, TrainConfig, train

pytestmark = pytest.mark.usefixtures("quick_structure_pictures")

# Tiny runs (milliseconds a step).  The stop comes after the evaluation at step 3, between the log lines
# of steps 0 and 4: the resumed run must carry the training sums of steps 1-3 over to log step 4's line.
TINY = dict(hidden=8, embedding=8, batch_size=8, eval_size=8, eval_every=3, log_every=4, checkpoint_every=100,
            steps=8, lr=0.01)
TASK_SETTINGS = {
    "digits": dict(attention="additive"),  # attention pooling: its weights must resume too
    "date-tags": dict(),
    "spell-numbers": dict(bidirectional=False),
    "forecast": dict(attention="none", bidirectional=False),
}
STOP_AT = 3


def as_options(cfg: TrainConfig) -> list:
    """``cfg`` as `rnnkit train` options: the resumed run goes through the command line, task defaults and all."""
    options = ["--task", cfg.task, "--bidirectional" if cfg.bidirectional else "--no-bidirectional", "--quiet"]
    for name in ("attention", "hidden", "embedding", "batch_size", "eval_size", "eval_every", "log_every",
                 "checkpoint_every", "steps", "lr"):
        options += ["--" + name.replace("_", "-"), str(getattr(cfg, name))]
    return options


def finished(out) -> dict:
    """What a finished run left, without its timings: step, weights, Adam's state, logs, metrics."""
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"step": state["step"], "model": state["model"], "optimizer": state["optimizer"]["state"],
            "history": [{k: v for k, v in row.items() if k not in TIMING} for row in state["history"]],
            "metrics": {k: v for k, v in metrics.items() if k not in TIMING}}


@pytest.mark.parametrize("task", sorted(TASK_SETTINGS))
def test_interrupted_then_resumed_run_ends_as_the_uninterrupted_one(task, tmp_path):
    cfg = TrainConfig(task=task, **TINY, **TASK_SETTINGS[task])
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(cfg, whole)
    with pytest.raises(Interrupted) as stop:
        train(cfg, parts, progress=StopAt(STOP_AT))
    assert stop.value.step == STOP_AT
    assert torch.load(parts / "checkpoint.pt", weights_only=True)["step"] == STOP_AT
    assert main(["train", "--out", str(parts), "--resume"] + as_options(cfg)) == 0

    a, b = finished(whole), finished(parts)
    assert a["step"] == b["step"] == cfg.steps
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for index, moments in a["optimizer"].items():
        for name, value in moments.items():
            assert torch.equal(value, b["optimizer"][index][name]), (index, name)
    assert a["history"] == b["history"]
    assert a["metrics"] == b["metrics"]
    assert a["metrics"]["metric"] in a["metrics"]

"""Helpers of the fault tests of `rnnkit train` / `predict`: one tiny run configuration, what a
finished run produced, and a byte-and-mtime snapshot of a folder."""
import json
import os
from pathlib import Path

import torch

# Small enough for a step to take milliseconds; eval and log every step, so every step has every part.
SETTINGS = dict(hidden=16, embedding=8, batch_size=8, eval_size=8, eval_every=1, log_every=1, steps=5,
                checkpoint_every=2, cell="gru")
# Values that are timings, never results.
TIMING = ("seconds", "examples_per_sec")


def cli_options(**changes) -> list:
    """SETTINGS as `rnnkit train` options (plus --quiet); a change to None leaves that option out."""
    settings = {**SETTINGS, **changes}
    return [arg for k, v in settings.items() if v is not None
            for arg in (f"--{k.replace('_', '-')}", str(v))] + ["--quiet"]


def fake_picture(data, path, *rest):
    """Stands in for a plot (drawing takes most of a tiny run's time); writes a few bytes."""
    if hasattr(path, "write"):
        path.write(b"picture")
    else:
        Path(path).write_bytes(b"picture")


def no_picture(*args, **kwargs):
    """Stands in for any picture of the four structures' tasks: a few bytes into the file object it was given."""
    next(a for a in args if hasattr(a, "write")).write(b"picture")


def result(out: Path) -> dict:
    """What a finished run in ``out`` produced: its final state and metrics, without timings."""
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    metrics = json.loads((out / "metrics.json").read_text())
    history = [{k: v for k, v in row.items() if k not in TIMING} for row in state["history"]]
    return {"step": state["step"], "model": state["model"], "optimizer": state["optimizer"], "history": history,
            "metrics": {k: metrics[k] for k in ("loss", "exact_match", "heldout_loss")}}


def assert_same_result(out: Path, reference: dict) -> None:
    """The run in ``out`` ended exactly where ``reference`` did: weights, Adam's moments, logs, metrics."""
    got = result(out)
    assert got["step"] == reference["step"]
    assert got["model"].keys() == reference["model"].keys()
    for k in reference["model"]:
        assert torch.equal(got["model"][k], reference["model"][k]), k
    for index, moments in reference["optimizer"]["state"].items():
        for k, v in moments.items():
            assert torch.equal(got["optimizer"]["state"][index][k], v), (index, k)
    assert got["history"] == reference["history"]
    assert got["metrics"] == reference["metrics"]


def snapshot(folder: Path) -> dict:
    """Every entry under ``folder`` (hidden ones too): its bytes or link target, and its mtime."""
    shot = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            mtime = os.lstat(path).st_mtime_ns
            if path.is_symlink():
                content = ("link", os.readlink(path))
            elif path.is_dir():
                content = ("folder",)
            else:
                content = ("file", path.read_bytes())
            shot[str(path.relative_to(folder))] = (content, mtime)
    return shot


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


class StopAt:
    """A progress hook that presses Ctrl-C (raises KeyboardInterrupt) after a given step."""

    def __init__(self, step):
        self.step = step

    def start(self, total, done):
        pass

    def update(self, step, row):
        if step >= self.step:
            raise KeyboardInterrupt

    def stop(self):
        pass

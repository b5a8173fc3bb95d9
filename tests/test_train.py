"""`rnnkit train` and `rnnkit predict`: the date task, a short run, resume, errors, multi-process."""
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit.cli.main import main
from rnnkit.data.dates import FORMS, DateTask
from rnnkit.training import Interrupted, TrainConfig, train

TINY = ["--hidden", "16", "--embedding", "8", "--batch-size", "16", "--eval-size", "40", "--eval-every", "3",
        "--log-every", "1", "--quiet"]


def test_date_forms_write_the_same_day():
    d = dt.date(1998, 3, 3)
    expected = {
        "weekday d month yyyy": "tuesday 3 march 1998", "m/d/yy": "3/3/98", "Month d, yyyy": "March 3, 1998",
        "dd.mm.yyyy": "03.03.1998", "dth of Month yyyy": "3rd of March 1998", "yyyymmdd": "19980303",
        "WEEKDAY, MONTH D, YYYY": "TUESDAY, MARCH 3, 1998", "dd-Mon-yy": "03-Mar-98",
    }
    for name, text in expected.items():
        assert FORMS[name](d) == text
    assert len(FORMS) >= 12


def test_date_splits_are_disjoint_and_deterministic():
    task = DateTask(seed=0)
    assert not set(task.train_days) & set(task.heldout_days)
    assert 0.05 < len(task.heldout_days) / (len(task.train_days) + len(task.heldout_days)) < 0.15
    held_targets = {t for _, t in task.sample("heldout", 2000, seed=0)}
    train_targets = {t for _, t in task.sample("train", 5000, seed=1)}
    assert not held_targets & train_targets
    assert task.sample("train", 50, seed=3) == DateTask(seed=0).sample("train", 50, seed=3)
    assert task.sample("train", 50, seed=3) != task.sample("train", 50, seed=4)
    for src, tgt in task.sample("train", 200, seed=5):
        task.source_vocab.encode(src)
        assert len(tgt) == 10 and dt.date.fromisoformat(tgt)
    with pytest.raises(ValueError, match="split"):
        task.sample("test", 1, 0)


def test_short_run_writes_everything(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--steps", "6", "--out", str(out)] + TINY) == 0
    for name in ("metrics.json", "metrics.csv", "loss.png", "attention.png", "checkpoint.pt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("task", "exact_match", "loss", "steps", "seconds", "config"):
        assert key in metrics
    assert metrics["task"] == "dates" and metrics["steps"] == 6 and 0 <= metrics["exact_match"] <= 1
    assert metrics["config"]["hidden"] == 16
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,loss,accuracy") and len(rows) == 7
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6
    # predict reads it back
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "3 March 1998",
                 "--plot", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 0


class StopAt:
    """A progress hook that presses Ctrl-C after a given step."""

    def __init__(self, step):
        self.step = step

    def start(self, total, done):
        pass

    def update(self, step, row):
        if step >= self.step:
            raise KeyboardInterrupt

    def stop(self):
        pass


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = dict(hidden=16, embedding=8, batch_size=16, eval_size=40, eval_every=4, log_every=1, steps=8,
               checkpoint_every=100, cell="lstm")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    train(TrainConfig(**cfg), whole)
    with pytest.raises(Interrupted) as stop:
        train(TrainConfig(**cfg), parts, progress=StopAt(5))
    assert stop.value.step == 5
    assert torch.load(parts / "checkpoint.pt", weights_only=True)["step"] == 5
    train(TrainConfig(**cfg), parts, resume=True)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(parts / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (whole, parts))
    assert ma["exact_match"] == mb["exact_match"] and ma["loss"] == mb["loss"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rnnkit", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "metrics.json").write_text("mine")
    res = run_cli("train", "--out", str(out), "--steps", "1", *TINY)
    assert res.returncode == 2 and "already holds a run" in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert (out / "metrics.json").read_text() == "mine"

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    (tmp_path / "foreign.pt").write_bytes(torch.zeros(3).numpy().tobytes())
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    cases = [
        (["train", "--cell", "transformer"], "unknown cell 'transformer'"),
        (["train", "--attention", "cosine"], "unknown --attention 'cosine'"),
        (["train", "--task", "translate"], "unknown --task 'translate'"),
        (["train", "--task", "lm", "--data", str(tmp_path / "missing.txt")], "no such file"),
        (["train", "--task", "lm", "--data", str(empty)], "is empty"),
        (["train", "--task", "lm"], "--data FILE"),
        (["train", "--steps", "0"], "greater than zero"),
        (["train", "--out", str(out / "metrics.json")], "not a folder"),
        (["predict", "--checkpoint", str(tmp_path / "foreign.pt"), "3 March 1998"], "not a readable torch checkpoint"),
        (["predict", "--checkpoint", str(tmp_path / "other.pt"), "3 March 1998"], "not an rnnkit training checkpoint"),
        (["predict", "--checkpoint", str(tmp_path / "none.pt"), "3 March 1998"], "no checkpoint"),
        (["train", "--resume", "--out", str(tmp_path / "nothing")], "no checkpoint.pt"),
    ]
    for args, phrase in cases:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        code = main(args + (["--out", str(tmp_path / "new")] if args[0] == "train" and "--out" not in args else []))
        assert code == 2, args
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, args  # nothing written


def test_unwritable_out_and_config_mismatch(tmp_path, capsys):
    if os.geteuid() != 0:  # root writes anywhere; the check is meaningful for users
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        assert main(["train", "--out", str(locked / "run")] + TINY) == 2
        assert "not writable" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(out)] + TINY) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "--steps", "2", "--out", str(out), "--resume", "--lr", "0.5"] + TINY) == 2
    assert "different configuration (lr: checkpoint 0.003, now 0.5)" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before
    (out / "checkpoint.pt").write_bytes(before[: len(before) // 2])  # corrupt
    assert main(["train", "--steps", "2", "--out", str(out), "--resume"] + TINY) == 2
    assert "not a readable torch checkpoint" in capsys.readouterr().err


def test_language_model_on_your_text(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 200)
    out = tmp_path / "lm"
    assert main(["train", "--task", "lm", "--data", str(text), "--steps", "5", "--seq-len", "32", "--cell", "gru",
                 "--out", str(out)] + TINY) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "lm" and metrics["bits_per_char"] > 0 and len(metrics["samples"]) == 3
    assert (out / "samples.txt").is_file() and (out / "loss.png").is_file()
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "the ", "--length", "20"]) == 0
    assert capsys.readouterr().out.startswith("the ")


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_processes_match_one(tmp_path):
    """Both runs in float64 (tests/train_in_float64.py): two processes sum their halves of the batch and
    all-reduce, one process sums it whole, and the two round differently.  Adam divides each gradient by
    its own running magnitude, so a gradient entry near zero turns a rounding difference into a step
    difference of up to the learning rate: in float32 (rounding ~1e-7) the fixed tolerance held by the luck
    of the machine's rounding; in float64 (~1e-16) such an amplified difference stays below ~1e-8, far
    inside the tolerance, while a wrong reduction (an unscaled sum, a rank's batch twice) moves the
    parameters by ~the learning rate (3e-3)."""
    common = ["--steps", "3", "--hidden", "16", "--embedding", "8", "--batch-size", "16", "--eval-size", "20",
              "--eval-every", "3", "--log-every", "1", "--quiet", "--cell", "gru"]
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert main(["train", "--out", str(tmp_path / "one")] + common) == 0
    finally:
        torch.set_default_dtype(before)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29517",
                          str(Path(__file__).with_name("train_in_float64.py")), "train",
                          "--out", str(tmp_path / "two")] + common, capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["model"]
    for k in one:
        assert one[k].dtype == two[k].dtype == torch.float64 or not one[k].is_floating_point(), k
        torch.testing.assert_close(one[k], two[k], atol=1e-5, rtol=1e-4)
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["world_size"] == 2

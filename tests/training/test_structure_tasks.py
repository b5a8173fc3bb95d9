"""`rnnkit train --task` for the four structures (digits N-1, date-tags N-N, spell-numbers 1-N, forecast N-1
on a series): each reaches its metric's level at a test-sized budget, leaves its pictures, and `rnnkit
predict` reads its checkpoint; bad input is one line, exit 2, and writes nothing."""
import json
import re
import sys

import pytest
from faults import fake_picture, one_line_error, snapshot

from rnnkit.cli.main import main
from rnnkit.data.dates import DateTask
from rnnkit.training import plots, structure_plots

# A few seconds each on one thread of the project's 2-core machine.  With these budgets (seed 0) the runs
# measured there reach: digits 0.85 held-out accuracy, date-tags 0.975 per-step accuracy, spell-numbers
# 0.78 exact match, forecast an MAE 0.64 of the naive forecast's; each level below leaves a margin.
BUDGETS = {
    "digits": (["--steps", "100", "--hidden", "32", "--batch-size", "32"], "heldout_accuracy", ">=", 0.75),
    "date-tags": (["--steps", "80", "--hidden", "32", "--embedding", "16", "--batch-size", "32", "--eval-size", "100"],
                  "step_accuracy", ">=", 0.95),
    "spell-numbers": (["--steps", "120", "--hidden", "64", "--batch-size", "32"], "exact_match", ">=", 0.5),
    "forecast": (["--steps", "50"], "mae_ratio", "<=", 0.8),
}
PICTURES = {"digits": "confusion.png", "date-tags": "confusion.png", "spell-numbers": "steps.png",
            "forecast": "forecast.png"}
PREDICT = {"digits": ("7", r"^\d \(probability [01]\.\d{3}, true \d\)$"),
           "date-tags": ("3 March 1998", r"^3 March 1998\n[.dmyw]{12}$"),
           "spell-numbers": ("342", r"^[a-z -]+$"),
           "forecast": ("50, 80, 120, 140, 100", r"^-?\d+\.\d\d$")}


@pytest.mark.parametrize("task", sorted(BUDGETS))
def test_each_task_reaches_its_level_and_predict_reads_it(task, tmp_path, capsys):
    options, metric, direction, level = BUDGETS[task]
    out = tmp_path / "run"
    assert main(["train", "--task", task, "--out", str(out), "--eval-every", "1000", "--quiet"] + options) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["metric"] in metrics
    value = metrics[metric]
    assert value >= level if direction == ">=" else value <= level, (task, metric, value)
    for name in ("checkpoint.pt", "metrics.csv", "loss.png", "structure.png", PICTURES[task]):
        assert (out / name).stat().st_size > 0, name
    assert metric in (out / "metrics.csv").read_text().splitlines()[0]
    capsys.readouterr()
    text, expected = PREDICT[task]
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), text]) == 0
    assert re.match(expected, capsys.readouterr().out.rstrip("\n")), task


def test_structure_picture_labels_the_trained_shapes(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(structure_plots, "structure_diagram", lambda flow, f, title="": drawn.append(flow))
    assert main(["train", "--task", "digits", "--out", str(tmp_path / "run"), "--steps", "1", "--hidden", "8",
                 "--batch-size", "4", "--bidirectional", "--quiet"]) == 0
    flow, = drawn
    assert flow.structure == "N-1" and flow.steps_in == 8  # 8 rows of 8 pixels
    assert flow.step_in.shape == (4, 8) and flow.state.shape == (4, 16) and flow.step_out.shape == (4, 10)


def test_the_dates_task_draws_its_structure_from_the_trained_shapes(tmp_path, monkeypatch):
    """N-M: the default task leaves structure.png too, its encoder's steps and its decoder's; nothing else of
    its outputs changes (its metrics.json names no structure, as before)."""
    drawn = []
    monkeypatch.setattr(structure_plots, "structure_diagram", lambda flow, f, title="": drawn.append((flow, title)))
    monkeypatch.setattr(plots, "loss_curves", fake_picture)
    monkeypatch.setattr(plots, "attention_heatmaps", fake_picture)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--hidden", "8", "--embedding", "6", "--batch-size", "4",
                 "--eval-size", "4", "--quiet"]) == 0
    (flow, title), = drawn
    longest_source = DateTask(seed=0).max_source_len
    assert flow.structure == "N-M" and flow.model == "Seq2Seq"
    assert flow.steps_in == longest_source and flow.steps_out == 11  # "yyyy-mm-dd" and <eos>
    assert flow.step_in.shape == (4, 6)  # a step of the batch: embedded characters
    assert flow.step_out.shape[0] == 4 and flow.state.shape == (4, 16)  # the decoder's state: both directions
    assert title == f"N-M: task dates, Seq2Seq (batch 4, {longest_source} steps in, 11 out)"
    assert (out / "structure.png").is_file() and (out / "attention.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "structure" not in metrics and "metric" not in metrics


def test_a_missing_extra_names_the_pip_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # as if scikit-learn were not installed
    before = snapshot(tmp_path)
    assert main(["train", "--task", "digits", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and 'pip install -e ".[tasks]" -c constraints.txt' in err and "scikit-learn" in err
    assert snapshot(tmp_path) == before


def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    two_columns = tmp_path / "two.csv"
    two_columns.write_text("1,2\n3,4\n" * 100)
    short = tmp_path / "short.txt"
    short.write_text("1\n2\n3\n")
    words = tmp_path / "words.txt"
    words.write_text("1\n2\nthree\n" + "4\n" * 200)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "confusion.png").write_text("mine")
    cases = [
        (["--task", "sequence"], "unknown --task 'sequence'; choose from dates, lm, digits, date-tags"),
        (["--task", "digits", "--data", str(short)], "task digits trains on its embedded data; drop --data"),
        (["--task", "spell-numbers", "--bidirectional"], "drop --bidirectional"),
        (["--task", "forecast", "--data", str(two_columns)], "line 1 holds 2 values; a series has one number"),
        (["--task", "forecast", "--data", str(short)], "holds 3 values; forecasting with a window of 20 needs"),
        (["--task", "forecast", "--data", str(words)], "line 3 is not a number ('three')"),
        (["--task", "forecast", "--data", str(tmp_path / "none.txt")], "no such file"),
        (["--task", "date-tags", "--out", str(kept)], "already holds a run (confusion.png)"),
    ]
    for args, phrase in cases:
        before = snapshot(tmp_path)
        out = [] if "--out" in args else ["--out", str(tmp_path / "new")]
        assert main(["train"] + args + out + ["--steps", "1", "--quiet"]) == 2, args
        err = capsys.readouterr().err
        assert one_line_error(err) and phrase in err, (args, err)
        assert snapshot(tmp_path) == before, args


@pytest.mark.parametrize("task,text,phrase", [
    ("digits", "1 2 3 4 5 6 7 8 9 10", "expected 64 pixel values (8 rows of 8, from 0 to 16), got 10"),
    ("digits", "400", "a held-out image index lies in [0, 360), got 400"),
    ("digits", " ".join(["17"] * 64), "pixel values should lie in [0, 16]"),
    ("date-tags", "3 March 1998 ☃", "characters not in the vocabulary: '☃'"),
    ("spell-numbers", "1000", "expected a whole number from 0 to 999, got '1000'"),
    ("spell-numbers", "twelve", "expected a whole number from 0 to 999"),
    ("forecast", "12, x, 30", "expected numbers separated by commas or spaces"),
])
def test_bad_predict_input_is_one_line_exit_2(checkpoints, task, text, phrase, capsys):
    assert main(["predict", "--checkpoint", str(checkpoints / task / "checkpoint.pt"), text]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and phrase in err, err

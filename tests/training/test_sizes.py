"""Numbers a run cannot use (nan, inf, a seed past 64 bits, sizes past the machine's memory): one line,
exit 2, before anything is allocated or written; and the memory check counts what it should.
(`rnnkit explain`'s sizes: tests/test_cli.py.)"""
import re
from dataclasses import replace

import pytest
from faults import SETTINGS, cli_options, one_line_error, snapshot

from rnnkit.cli.main import main
from rnnkit.training import TrainConfig, memory

BAD = [
    (["--epochs", "nan"], "--epochs must be a finite number greater than zero, got nan"),
    (["--epochs", "inf"], "--epochs must be a finite number greater than zero, got inf"),
    (["--epochs", "1e308"], "asks for more steps than a float can count"),
    (["--seed", str(2**64)], "--seed must be a whole number from -2**63 to 2**64-1"),
    (["--seed", str(-2**63 - 1)], "--seed must be a whole number from -2**63 to 2**64-1"),
    (["--lr", "inf"], "--lr must be a finite number greater than zero, got inf"),
    (["--lr", "nan"], "--lr must be a finite number greater than zero, got nan"),
    (["--hidden", "100000000"], "the largest --hidden that fits with the other settings is"),
    (["--layers", "1000000000"], "is available; lower --layers"),
    (["--embedding", str(10**30)], "training it needs more than 9.2 EB of memory"),
    (["--batch-size", str(10**13)], "of memory"),
    (["--eval-size", str(10**16)], "of memory"),
]


def test_numbers_a_run_cannot_use_are_one_line_and_write_nothing(stopped_run, tmp_path, capsys):
    before = snapshot(tmp_path)
    for options, phrase in BAD:
        for where in (["--out", str(stopped_run), "--resume"], ["--out", str(tmp_path / "new")]):
            base = cli_options(steps=None) if "--epochs" in options else cli_options()
            assert main(["train"] + where + base + options) == 2, options
            err = capsys.readouterr().err
            assert one_line_error(err) and phrase in err, (options, err)
            assert snapshot(tmp_path) == before, options


def test_the_memory_message_says_what_was_asked_and_what_is_available(capsys, tmp_path):
    assert main(["train", "--hidden", "100000000", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--hidden 100000000" in err and "is available" in err
    assert re.search(r"needs at least [\d.]+ [kMGTPE]B of memory", err)


@pytest.mark.parametrize("changes", [{}, {"layers": 3, "cell": "lstm"}, {"attention": "notes", "cell": "min_gru"},
                                     {"task": "lm", "bidirectional": False, "layers": 4}])
def test_parameters_are_counted_without_building_and_match_the_real_model(tmp_path, changes):
    if changes.get("task") == "lm":
        text = tmp_path / "text.txt"
        text.write_text("the cat sat on the mat. " * 20)
        changes = {**changes, "data": str(text), "seq_len": 16}
    cfg = TrainConfig(**{**SETTINGS, **changes})
    task = memory._sizing_task(cfg)
    counted = memory.training_parameters(cfg, task)
    task.cfg = cfg
    assert counted == sum(p.numel() for p in task.build_model().parameters())


def test_the_memory_check_refuses_exactly_what_does_not_fit(monkeypatch):
    cfg = TrainConfig(**SETTINGS)
    task = memory._sizing_task(cfg)
    need = memory.training_bytes(cfg, task)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": need)
    memory.check_training_fits(cfg)  # exactly enough
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": need - 1)
    with pytest.raises(memory.TooLarge) as refused:
        memory.check_training_fits(cfg)
    largest = int(re.search(r"largest --hidden that fits with the other settings is (\d+)", str(refused.value))[1])
    assert memory.training_bytes(replace(cfg, hidden=largest), task) <= need - 1
    assert memory.training_bytes(replace(cfg, hidden=largest + 1), task) > need - 1


def test_training_needs_at_least_weights_gradients_and_moments():
    cfg = TrainConfig(**SETTINGS)
    task = memory._sizing_task(cfg)
    assert memory.training_bytes(cfg, task) >= 16 * memory.training_parameters(cfg, task)

"""`rnnkit explain` as a user runs it."""
import re
import subprocess
import sys

import pytest
import torch

import rnnkit
from helpers import assert_within_rounding, float64_truth_of, rounding_bound
from rnnkit.cli import explain
from rnnkit.cli.main import build_parser, main
from rnnkit.cli.reference import torch_twin
from rnnkit.training import memory

@pytest.fixture
def checks(monkeypatch):
    """Every `explain --check` run: (the difference it printed, twice the rounding bound of its computation).
    The check compares rnnkit and torch.nn, both in float32; each is held here within
    helpers.rounding_bound of the float64 truth (a bound derived from the computation's sensitivity to
    rounding), so their difference is within twice that.  The CLI itself fails a check above a fixed
    1e-5 (rnnkit/cli/explain.py): measured here, the differences are ~1e-7 while twice the derived bound
    is 0.8e-5 to 1.6e-5 for these configurations, so the exit codes 0 asserted below hold with the largest
    error/sensitivity ratios ever measured (9.1, helpers.ROUNDING_FACTOR: <= 0.5e-5) but not with the
    bound's full 3.4x margin over them: a threshold for the package to derive, not the tests."""
    runs = []
    original = explain.check

    def check(layer, seq_len, batch, seed):
        diff = original(layer, seq_len, batch, seed)
        gen = torch.Generator().manual_seed(seed)  # the input explain.check draws
        x = torch.randn(*((batch, seq_len) if layer.batch_first else (seq_len, batch)), layer.input_size, generator=gen)
        truth, sensitivities = float64_truth_of(lambda m, x: m(x), torch_twin(layer), [x], grad=False)
        with torch.no_grad():
            for who, module in (("rnnkit", layer), ("torch.nn", torch_twin(layer))):
                out, state = module(x)
                got = [out] + list(state if isinstance(state, tuple) else (state,))
                assert_within_rounding(got, truth, sensitivities, torch.float32, who=who)
        runs.append((diff, 2 * max(rounding_bound(s, torch.float32) for s in sensitivities)))
        return diff

    monkeypatch.setattr(explain, "check", check)
    return runs


def test_explain_notes_example(capsys, checks):
    torch.manual_seed(0)  # the layer's parameters: the same whatever ran before
    code = main(["explain", "lstm", "--input-size", "100", "--hidden-size", "20", "--num-layers", "4",
                 "--bidirectional", "--seq-len", "10", "--batch", "3", "--check"])
    out = capsys.readouterr().out
    assert code == 0
    assert "LSTM(100, 20, num_layers=4, bidirectional=True)" in out
    assert "weight_ih_l0_reverse  (80, 100)" in out
    assert "49,280" in out  # total parameter count
    for line in ("input   (10, 3, 100)", "h_0     (8, 3, 20)", "c_0     (8, 3, 20)", "output  (10, 3, 40)"):
        assert line in out
    assert "c_t = f_t * c_{t-1} + i_t * g_t" in out
    diff = float(out.strip().rsplit("=", 1)[1])
    (checked, bound), = checks
    assert diff == pytest.approx(checked, rel=1e-2)  # printed to 3 digits
    assert checked <= bound


def test_explain_batch_first_projection_and_gru(capsys, checks):
    torch.manual_seed(0)
    assert main(["explain", "lstm", "--input-size", "4", "--hidden-size", "5", "--proj-size", "2",
                 "--batch-first", "--seq-len", "3", "--batch", "2", "--check"]) == 0
    out = capsys.readouterr().out
    assert "input   (2, 3, 4)" in out and "h_0     (1, 2, 2)" in out and "c_0     (1, 2, 5)" in out
    assert "weight_hr_l0" in out and "W_hr" in out
    assert main(["explain", "gru", "--check"]) == 0
    assert "n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))" in capsys.readouterr().out
    assert main(["explain", "rnn", "--nonlinearity", "relu", "--num-layers", "2", "--check"]) == 0
    assert len(checks) == 3 and all(diff <= bound for diff, bound in checks)


def test_explain_bad_input_is_one_line_exit_2(capsys):
    assert main(["explain", "gru", "--proj-size", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "only supported for lstm" in err
    assert main(["explain", "lstm", "--hidden-size", "0"]) == 2
    assert "hidden_size must be greater than zero" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["explain", "transformer"])
    assert e.value.code == 2


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "rnnkit", "explain", "rnn"], capture_output=True, text=True)
    assert res.returncode == 0 and "RNN(10, 20)" in res.stdout


@pytest.mark.parametrize("options, phrase", [
    (["lstm", "--hidden-size", "100000000"], "the largest --hidden-size that fits"),
    (["gru", "--num-layers", "1000000000"], "lower --input-size, --num-layers"),
    (["rnn", "--check", "--seq-len", "100000000", "--batch", "1000000"], "and what --check/--plot run"),
    (["lstm", "--input-size", str(10**30)], "needs more than 9.2 EB"),
])
def test_explain_sizes_past_memory_are_one_line(capsys, options, phrase):
    assert main(["explain"] + options) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert phrase in err and "is available" in err, err


def test_explain_counts_the_layer_it_would_build_and_suggests_a_size_that_fits(monkeypatch, capsys):
    options = ["lstm", "--input-size", "7", "--hidden-size", "9", "--num-layers", "3", "--proj-size", "4",
               "--bidirectional"]
    args = build_parser().parse_args(["explain"] + options)
    kwargs = dict(num_layers=3, bias=True, batch_first=False, bidirectional=True, proj_size=4)
    need = explain.needed_bytes(args, kwargs, 9)
    assert need == 4 * sum(p.numel() for p in rnnkit.LSTM(7, 9, **kwargs).parameters())
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": need - 1)
    assert main(["explain"] + options) == 2
    suggested = int(re.search(r"largest --hidden-size that fits with the other sizes is (\d+)",
                              capsys.readouterr().err)[1])
    assert explain.needed_bytes(args, kwargs, suggested) <= need - 1 < explain.needed_bytes(args, kwargs, suggested + 1)


# ----- explain --structure (issue 19): the shapes through each structure's model -------------------------
@pytest.mark.parametrize("structure,lines", [
    ("N-1", ["input x    (3, 5, 10)", "output o   (3, 5, 40)", "h_n        (2, 3, 20)", "summary s  (3, 40)",
             "scores     (3, 7)", "x_t     (3, 10)", "h_t     (3, 40)"]),
    ("N-N", ["input x   (3, 5, 10)", "output o  (3, 5, 40)", "scores    (3, 5, 7)", "scores_t  (3, 7)"]),
    ("N-M", ["source ids   (3, 5)", "memory m     (3, 5, 40)", "attention    (3, 5, 5)", "logits       (3, 5, 7)"]),
])
def test_explain_structure_shapes_by_hand(structure, lines, capsys):
    """B = 3, T = 5, F = 10, H = 20, bidirectional: D*H = 40; 7 outputs (classes, tags, vocabulary)."""
    assert main(["explain", "--structure", structure, "--bidirectional", "--batch-first", "--outputs", "7",
                 "--seq-len", "5", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Structure {structure}, ")
    for line in lines:
        assert line in out, line


def test_explain_structure_one_to_many_and_its_picture(tmp_path, capsys):
    picture = tmp_path / "structure.png"
    assert main(["explain", "lstm", "--structure", "1-N", "--input-size", "6", "--hidden-size", "8", "--seq-len", "4",
                 "--outputs", "12", "--plot", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "LSTM(12, 8)" in out  # the decoder reads [embedding 6 ; condition 6]
    for line in ("condition c  (3, 6)", "step input   (3, 12)", "scores       (4, 3, 12)"):  # (T, B, V)
        assert line in out, line
    assert picture.stat().st_size > 0


@pytest.mark.parametrize("args,phrase", [
    (["--structure", "1-N", "--bidirectional"], "build the layer with bidirectional=False"),
    (["--structure", "N-1", "--check"], "with --structure leave it out"),
    (["--structure", "N-M", "--outputs", "3"], "more than the 3 special tokens"),
    ([], "name the layer (rnn, lstm or gru), or give --structure"),
])
def test_explain_structure_bad_input_is_one_line(args, phrase, capsys):
    assert main(["explain"] + args) == 2
    err = capsys.readouterr().err
    assert phrase in err and err.count("\n") == 1

"""`rnnkit explain` as a user runs it."""
import subprocess
import sys

import pytest

from rnnkit.cli.main import main


def test_explain_notes_example(capsys):
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
    assert diff <= 1e-5


def test_explain_batch_first_projection_and_gru(capsys):
    assert main(["explain", "lstm", "--input-size", "4", "--hidden-size", "5", "--proj-size", "2",
                 "--batch-first", "--seq-len", "3", "--batch", "2", "--check"]) == 0
    out = capsys.readouterr().out
    assert "input   (2, 3, 4)" in out and "h_0     (1, 2, 2)" in out and "c_0     (1, 2, 5)" in out
    assert "weight_hr_l0" in out and "W_hr" in out
    assert main(["explain", "gru", "--check"]) == 0
    assert "n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))" in capsys.readouterr().out
    assert main(["explain", "rnn", "--nonlinearity", "relu", "--num-layers", "2", "--check"]) == 0


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

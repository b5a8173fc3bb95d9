"""`rnnkit predict --plot` on the tasks of the four structures: each draws what its model did with the input
(the numbers drawn are checked against the model's own output), or says in one line why it has nothing to
draw and writes no file."""
import numpy as np
import pytest
from faults import one_line_error

from rnnkit.cli.main import main
from rnnkit.training import prediction_plots, task_plots


def spy(monkeypatch, module, name) -> list:
    """Record the arguments of every call of ``module.name``, which still draws."""
    calls, draw = [], getattr(module, name)

    def recorded(*args, **kwargs):
        calls.append(args)
        return draw(*args, **kwargs)
    monkeypatch.setattr(module, name, recorded)
    return calls


def predict_and_plot(checkpoints, run, text, picture, capsys) -> tuple:
    """(exit code, what predict printed, its one stderr line or "")."""
    code = main(["predict", "--checkpoint", str(checkpoints / run / "checkpoint.pt"), text, "--plot", str(picture)])
    captured = capsys.readouterr()
    return code, captured.out.rstrip("\n"), captured.err


def test_digits_with_attention_pooling_draws_each_rows_weight(checkpoints, tmp_path, monkeypatch, capsys):
    calls = spy(monkeypatch, prediction_plots, "attention_over_rows")
    code, printed, _ = predict_and_plot(checkpoints, "digits-attention", "7", tmp_path / "p.png", capsys)
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 0
    (image, weights, probs, *_), = calls
    assert tuple(image.shape) == (8, 8) and tuple(weights.shape) == (8,)  # one weight per row, the steps read
    assert float(weights.sum()) == pytest.approx(1, abs=1e-6) and float(probs.sum()) == pytest.approx(1, abs=1e-6)
    assert printed.startswith(f"{int(probs.argmax())} (probability {float(probs.max()):.3f}")


def test_date_tags_draws_each_characters_tag_probabilities(checkpoints, tmp_path, monkeypatch, capsys):
    calls = spy(monkeypatch, prediction_plots, "tag_probabilities")
    code, printed, _ = predict_and_plot(checkpoints, "date-tags", "3 March 1998", tmp_path / "p.png", capsys)
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 0
    (text, probs, names, *_), = calls
    assert text == "3 March 1998" and probs.shape == (12, 5) and names == ["other", "day", "month", "year", "weekday"]
    assert np.allclose(probs.sum(1), 1, atol=1e-6)
    assert printed.splitlines()[1] == "".join(".dmyw"[k] for k in probs.argmax(1))  # the tags it printed


def test_spell_numbers_draws_each_steps_character_probabilities(checkpoints, tmp_path, monkeypatch, capsys):
    calls = spy(monkeypatch, task_plots, "token_probabilities")
    code, printed, _ = predict_and_plot(checkpoints, "spell-numbers", "342", tmp_path / "p.png", capsys)
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 0
    (examples, *_), = calls
    (asked, written, probs, labels), = examples
    assert asked == "342" and probs.shape == (len(written), len(labels)) and np.allclose(probs.sum(1), 1, atol=1e-6)
    assert written == [labels[k] for k in probs.argmax(1)]  # greedy: each step wrote its most likely character
    assert printed == "".join(w for w in written if len(w) == 1)


@pytest.mark.parametrize("run", ["forecast", "forecast-attention"])
def test_forecast_draws_the_window_and_the_forecast(checkpoints, run, tmp_path, monkeypatch, capsys):
    calls = spy(monkeypatch, prediction_plots, "forecast_window")
    code, printed, _ = predict_and_plot(checkpoints, run, "50, 80, 120, 140, 100", tmp_path / "p.png", capsys)
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 0
    (values, forecast, weights, *_), = calls
    assert values.tolist() == [50, 80, 120, 140, 100] and printed == f"{forecast:.2f}"
    if run == "forecast":
        assert weights is None  # last-state pooling: no weights over the steps
    else:
        assert weights.shape == (5,) and weights.sum() == pytest.approx(1, abs=1e-6)


def test_a_classifier_without_attention_says_why_there_is_nothing_to_draw(checkpoints, tmp_path, capsys):
    code, printed, err = predict_and_plot(checkpoints, "digits", "7", tmp_path / "p.png", capsys)
    assert code == 2 and printed  # the prediction is printed; the picture is refused
    assert one_line_error(err) and "--plot: this model reads its last state (trained with --attention none), so " \
        "it has no weights over the rows to draw; train with --attention additive" in err, err
    assert not (tmp_path / "p.png").exists()

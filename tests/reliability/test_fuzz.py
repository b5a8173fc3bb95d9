"""Differential fuzzing (issue 7, item 1): hypothesis draws the configurations `rnnkit verify` draws
(rnnkit.verify.fuzz.draw_config), each run on rnnkit and on torch.nn (layers) or on the reference
backend and a plain loop of cell calls (Recurrent over every rnnkit cell)."""
from __future__ import annotations

import collections
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit import kernels
from rnnkit.cli.main import main
from rnnkit.verify import fuzz

# Bounded for CI: 5-40 ms an example on one thread, so about 10 s for both.
FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.data())
def test_layers_match_torch_nn(data):
    result = fuzz.check(fuzz.draw_config(fuzz.HypothesisChooser(data), kinds=("layer",)))
    assert result.ok, f"{result.status}: {result.message}\nreplay: rnnkit verify --replay '{result.replay()}'"


@FUZZ
@given(st.data())
def test_recurrent_backends_match_reference_and_cell_loop(data):
    result = fuzz.check(fuzz.draw_config(fuzz.HypothesisChooser(data), kinds=("recurrent",)))
    assert result.ok, f"{result.status}: {result.message}\nreplay: rnnkit verify --replay '{result.replay()}'"


def test_the_space_covers_every_option():
    """Seeded draws reach every value of every option (so the fuzzer is not silently narrow)."""
    seen = collections.defaultdict(set)
    for seed in range(400):
        config = fuzz.draw_config(seed)
        for key, value in config.items():
            if key in ("kind", "mode", "cell", "form", "dtype", "backend", "bidirectional", "batch_first",
                       "bias", "with_hx", "merge", "num_layers"):
                seen[key].add(value)
        seen["proj"].add(bool(config.get("proj_size")))
        seen["dropout"].add(config.get("dropout", 0.0) > 0)
    assert seen["kind"] == {"layer", "recurrent"}
    assert seen["mode"] == {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    assert seen["cell"] == set(fuzz.cell_classes())
    assert {"RNNCell", "LSTMCell", "GRUCell"} <= seen["cell"]
    assert seen["form"] == set(fuzz.RECURRENT_FORMS)
    assert seen["dtype"] == {"float32", "float64"}
    # every backend that runs on this machine (a CUDA-only backend's check refuses CPU tensors)
    assert {"auto", "reference", "ops", "numba"} <= seen["backend"] <= {"auto", *kernels.BACKENDS}
    assert seen["merge"] == {"concat", "sum", "mean", "mul"}
    assert seen["num_layers"] == {1, 2, 3}
    for key in ("bidirectional", "batch_first", "bias", "with_hx", "proj", "dropout"):
        assert seen[key] == {False, True}, key


def test_same_seed_same_configuration():
    assert fuzz.draw_config(17) == fuzz.draw_config(17)
    assert fuzz.draw_config(17) != fuzz.draw_config(18)


def test_verify_command_prints_the_table_and_passes(capsys):
    assert main(["verify", "--examples", "6", "--seed", "11"]) == 0
    out = capsys.readouterr().out
    assert "6 configurations from seed 11" in out
    assert "max |Δ out|" in out and "max |Δ grad|" in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[1:4] == ["6", "6", "0"]
    assert "PASS: 6 of 6 agree" in out


def test_a_wrong_kernel_is_caught_with_a_replayable_configuration(monkeypatch, capsys):
    """Sabotage the reference kernel by one part in 10^4 in one gate of one step: verify fails (exit 1)
    and prints the configuration, whose replay fails again while the sabotage lasts and passes after."""
    layer_fn = kernels.REFERENCE.layer

    def wrong(eq, x, batch_sizes, state0, weights, reverse):
        out, state = layer_fn(eq, x, batch_sizes, state0, weights, reverse)
        return out * (1 + 1e-4), state

    config = {"kind": "layer", "mode": "gru", "input_size": 3, "hidden_size": 4, "num_layers": 1,
              "bidirectional": False, "batch_first": False, "bias": True, "proj_size": 0, "dropout": 0.0,
              "form": "batched", "seq_len": 3, "batch": 2, "with_hx": False, "dtype": "float64",
              "backend": "reference", "seed": 5}
    monkeypatch.setattr(kernels.REFERENCE, "layer", wrong)
    assert main(["verify", "--replay", json.dumps(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED (fail)" in out and "vs torch.nn" in out
    printed = out.split("configuration: ", 1)[1].splitlines()[0]
    assert json.loads(printed) == config
    monkeypatch.setattr(kernels.REFERENCE, "layer", layer_fn)
    assert main(["verify", "--replay", printed]) == 0
    # a sabotaged run of many examples fails too, and names a seed that replays it alone
    monkeypatch.setattr(kernels.REFERENCE, "layer", wrong)
    assert main(["verify", "--examples", "4", "--seed", "0", "--kinds", "recurrent"]) == 1
    assert "rnnkit verify --seed" in capsys.readouterr().out


def test_float32_beyond_the_tolerance_the_rounding_bound_decides(monkeypatch):
    """A float32 comparison beyond its fixed tolerance falls through to the rounding bound
    (fuzz._rounding_excess: float32's rounding of the float64 result, derived from the computation's
    sensitivity, the same on every machine).  With the tolerance at 0 every float32 comparison goes
    there: correct kernels pass on every configuration drawn, and a kernel off by 3 parts in 10^5 in one
    layer's output fails, its message naming the bound."""
    monkeypatch.setitem(fuzz.TOL, "float32", 0.0)
    monkeypatch.setattr(fuzz, "_scaled_diff", lambda xs, ys: 0.0)  # Recurrent's "4x the reference's own error"
    checked = []
    excess = fuzz._rounding_excess
    monkeypatch.setattr(fuzz, "_rounding_excess",
                        lambda config, *a: checked.append(config["kind"]) or excess(config, *a))
    configs = {kind: [c for c in (fuzz.draw_config(seed, kinds=(kind,)) for seed in range(60))
                      if c["dtype"] == "float32" and c["backend"] != "reference"][:4] for kind in fuzz.KINDS}
    for config in configs["layer"] + configs["recurrent"]:
        result = fuzz.check(config)
        assert result.ok, f"{result.status}: {result.message}\nreplay: rnnkit verify --replay '{result.replay()}'"
    assert checked == ["layer"] * 4 + ["recurrent"] * 4  # every one went to the rounding bound
    layer_fn = kernels.REFERENCE.layer

    def wrong(eq, x, batch_sizes, state0, weights, reverse):
        out, state = layer_fn(eq, x, batch_sizes, state0, weights, reverse)
        return out * (1 + 3e-5), state

    config = dict(configs["layer"][0], backend="reference")
    assert fuzz.check(config).ok
    monkeypatch.setattr(kernels.REFERENCE, "layer", wrong)
    result = fuzz.check(config)
    assert result.status == "fail" and "beyond float32's rounding" in result.message, result.message


def test_a_crash_is_reported_not_raised(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(kernels.REFERENCE, "layer", boom)
    config = fuzz.draw_config(3, kinds=("layer",))
    config["backend"] = "reference"
    result = fuzz.check(config)
    assert result.status == "error" and "kernel exploded" in result.message and not result.ok


def test_verify_usage_errors(capsys):
    assert main(["verify", "--examples", "0"]) == 2
    assert main(["verify", "--kinds", "cells"]) == 2
    assert main(["verify", "--replay", "{not json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "rnnkit verify: error:" in err

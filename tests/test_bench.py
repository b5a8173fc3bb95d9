"""`rnnkit bench` runs its cases and writes what it says (timings themselves are not asserted)."""
import json

from rnnkit.bench.cases import Case, make_runners
from rnnkit.bench.report import summarize
from rnnkit.cli.main import main


def test_bench_command_writes_table_json_and_chart(tmp_path, capsys):
    js, png = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bench", "--modes", "gru,lstm", "--shapes", "5,2,3,4", "--extras", "lstm_packed",
                 "--repeats", "1", "--warmup", "0", "--no-memory", "--json", str(js), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "ratio = torch time / rnnkit time" in out and "geometric mean" in out
    result = json.loads(js.read_text())
    keys = {r["key"] for r in result["rows"]}
    assert "gru T=5 B=2 I=3 H=4 fwd+bwd" in keys and "lstm_packed T=200 B=16 I=64 H=64 fwd" in keys
    assert all(r["ratio"] > 0 and r["torch_ms"] > 0 and r["rnnkit_ms"] > 0 for r in result["rows"])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_transformer_case_runs_both_layers_and_has_its_target_line():
    rk, tw = make_runners(Case("transformer", (6, 2, 16, 2), "fwd+bwd"))
    rk(), tw()
    rows = [{"mode": "transformer", "pass": "fwd+bwd", "family": "transformer", "ratio": 1.2, "key": "t"}]
    assert any("target >= 0.95): met" in line for line in summarize(rows))


def test_bench_rejects_unknown_modes(capsys):
    assert main(["bench", "--modes", "lstm9"]) == 2
    assert "unknown mode lstm9" in capsys.readouterr().err


def test_issue4_cases_time_the_named_layers_and_have_target_lines():
    """layernorm_lstm runs rnnkit's LayerNormLSTMCell layer against torch.nn.LSTM; min_gru (the fused
    kernel, what auto picks on the CPU) and min_gru_scan against rnnkit's fused GRU."""
    from rnnkit.bench.cases import grid
    cases = grid([], [], ["fwd+bwd"], ["layernorm_lstm", "min_gru", "min_gru_scan"])
    assert [c.shape for c in cases if c.mode == "layernorm_lstm"] == [(100, 1, 32, 32), (200, 16, 64, 64),
                                                                     (100, 32, 256, 256)]
    assert all(c.shape[0] == 4096 for c in cases if c.mode.startswith("min_gru"))
    for mode in ("layernorm_lstm", "min_gru", "min_gru_scan"):
        rk, base = make_runners(Case(mode, (5, 2, 3, 4), "fwd+bwd"))
        rk(), base()
    rows = [{"mode": "layernorm_lstm", "pass": "fwd+bwd", "family": "layernorm_lstm", "ratio": 0.7, "key": "a"},
            {"mode": "min_gru", "pass": "fwd+bwd", "family": "min_gru", "ratio": 0.9, "key": "b"}]
    lines = summarize(rows)
    assert any(line.startswith("a: 1.43x the time of torch.nn.LSTM") and line.endswith(": met") for line in lines)
    assert any(line.startswith("b (fused sequential kernel") and line.endswith("NOT met") for line in lines)


def test_custom_cell_cases_time_a_users_cell_generated_against_its_reference_loop():
    """Issue 18's custom_cell cases: each user cell of rnnkit/bench/user_cells.py on backend="generated"
    against the same cell (same weights) on the reference loop, at issue 18's three sizes."""
    from rnnkit.bench.cases import CUSTOM_CELLS, grid
    cases = grid([], [], ["fwd+bwd"], list(CUSTOM_CELLS))
    assert sorted({c.shape for c in cases}) == [(100, 1, 32, 32), (100, 32, 256, 256), (200, 16, 64, 64)]
    assert {c.family for c in cases} == {"custom_cell"} and {c.baseline for c in cases} == {"reference loop"}
    for mode in CUSTOM_CELLS:
        rk, base = make_runners(Case(mode, (5, 2, 3, 4), "fwd+bwd"))
        rk(), base()
    rows = [{"mode": "custom_mgu", "pass": "fwd+bwd", "family": "custom_cell", "ratio": 25.0, "key": "a",
             "shape": [100, 1, 32, 32]},
            {"mode": "custom_mgu", "pass": "fwd+bwd", "family": "custom_cell", "ratio": 12.0, "key": "b",
             "shape": [200, 16, 64, 64]},
            {"mode": "custom_mgu", "pass": "fwd+bwd", "family": "custom_cell", "ratio": 2.0, "key": "c",
             "shape": [100, 32, 256, 256]}]
    lines = summarize(rows)
    assert "a: 25.0x the reference loop (target >= 20): met" in lines
    assert "b: 12.0x the reference loop (target >= 20): NOT met" in lines
    assert "c: 2.0x the reference loop" in lines


def test_peak_tensor_bytes_is_the_most_memory_alive_at_once():
    import torch

    from rnnkit.bench.memory import measure, peak_tensor_bytes

    def run():
        a = torch.empty(3_000_000, dtype=torch.uint8)
        b = torch.empty(1_000_000, dtype=torch.uint8)  # alive with a: 4 MB
        del a, b
        c = torch.empty(2_000_000, dtype=torch.uint8)  # alone: 2 MB
        del c

    assert peak_tensor_bytes(run) == 4_000_000
    # the bench's figure, from a fresh process: at least what the layer's output and dx hold
    T, B, I, H = 5, 2, 3, 4
    peak = measure("rnnkit", "gru", (T, B, I, H), 1)
    assert peak is not None and peak >= 4 * (T * B * H + T * B * I)

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

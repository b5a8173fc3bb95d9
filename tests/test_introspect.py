"""Gate traces (`rnnkit explain --plot`) are the gates the layer really computed."""
import torch

import rnnkit

# float64: the traced gates and the layer's output come from different code (the trace recomputes the
# gates op by op; the layer runs its fused kernel), and float64 leaves ~1e-16 of their rounding
F64 = torch.float64
ATOL = 1e-10
from rnnkit.cli.main import main
from rnnkit.introspect import trace_gates


def test_gru_gates_rebuild_the_output_in_both_directions():
    torch.manual_seed(0)
    gru = rnnkit.GRU(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    out, _ = gru(x)
    traces = trace_gates(gru, x)
    assert set(traces) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for d, cols in ((0, slice(0, 4)), (1, slice(4, 8))):
        z, n = traces[(1, d)]["z"], traces[(1, d)]["n"]  # (T, B, H)
        h = out[:, :, cols]
        steps = range(6) if d == 0 else range(5, -1, -1)
        prev = torch.zeros(2, 4, dtype=F64)
        for t in steps:
            torch.testing.assert_close((1 - z[t]) * n[t] + z[t] * prev, h[t], atol=ATOL, rtol=0)
            prev = h[t]


def test_lstm_gates_rebuild_the_output():
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(3, 5, batch_first=True, dtype=F64)
    x = torch.randn(2, 7, 3, dtype=F64)
    out, _ = lstm(x)
    g = trace_gates(lstm, x)[(0, 0)]
    c = torch.zeros(2, 5, dtype=F64)
    for t in range(7):
        c = g["f"][t] * c + g["i"][t] * g["g"][t]
        torch.testing.assert_close(g["o"][t] * c.tanh(), out[:, t], atol=ATOL, rtol=0)


def test_explain_plot_writes_a_png(tmp_path):
    path = tmp_path / "gates.png"
    assert main(["explain", "rnn", "--num-layers", "2", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""The int8 path computes its recurrences itself: none of torch's recurrent kernels is named or run."""
import ast
import pathlib
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit.quantization
from rnnkit.quantization import quantize_dynamic

from quantization_helpers import FAMILIES, float_layer, set_product
TESTS = str(pathlib.Path(__file__).resolve().parent.parent)  # test_purity.py, beside helpers.py
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
from test_purity import FORBIDDEN_NAMES, FORBIDDEN_OPS, OpRecorder, names_used  # noqa: E402

PACKAGE = pathlib.Path(rnnkit.quantization.__file__).parent


def test_the_sources_name_no_recurrent_kernel():
    found = [f"{path.name}:{line}: {name}" for path in PACKAGE.glob("*.py")
             for line, name in names_used(ast.parse(path.read_text())) if FORBIDDEN_NAMES.search(name)]
    assert not found, found


@pytest.mark.parametrize("family", FAMILIES)
def test_no_recurrent_kernel_runs(family, product, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a torch recurrent kernel was called")

    for name in ("lstm", "gru", "quantized_lstm", "quantized_gru", "quantized_lstm_cell", "quantized_gru_cell",
                 "lstm_cell", "gru_cell"):
        monkeypatch.setattr(torch, name, refuse)
        monkeypatch.setattr(torch._VF, name, refuse, raising=False)
    q = set_product(quantize_dynamic(float_layer(family, num_layers=2, bidirectional=True)), product)
    x = torch.randn(5, 3, 6)
    with OpRecorder() as rec, torch.no_grad():
        q(x)
        q(pack_padded_sequence(x, [5, 3, 2]))
    bad = sorted(op for op in rec.ops if FORBIDDEN_OPS.search(op))
    assert not bad, bad

"""rnnkit computes its recurrences itself: torch.nn's recurrent modules and kernels are never called."""
import ast
import pathlib
import re

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import rnnkit
from helpers import MODES

PACKAGE = pathlib.Path(rnnkit.__file__).parent
# The one module that names torch.nn's layers, to compare against them (explain --check, verify, bench).
REFERENCE_MODULE = PACKAGE / "cli" / "reference.py"
FORBIDDEN_NAMES = re.compile(
    r"^(torch\.)?nn\.(RNN|LSTM|GRU|RNNCell|LSTMCell|GRUCell|RNNBase|RNNCellBase"
    r"|MultiheadAttention|TransformerEncoderLayer|TransformerEncoder|Transformer)$"
    r"|multi_head_attention_forward|_transformer_encoder_layer_fwd|_native_multi_head_attention"
    r"|(^|\.)_VF(\.|$)"
    r"|^torch\.(lstm|gru|rnn_tanh|rnn_relu)(_cell)?$"
    r"|mkldnn_rnn|_cudnn_rnn|_thnn_fused_(lstm|gru)_cell|quantized_(lstm|gru)"
)
# aten's recurrent ops by name; rnnkit's own operators (rnnkit::lstm, ...: backend "ops"), which OpRecorder
# names with their namespace, are rnnkit computing the recurrence itself
FORBIDDEN_OPS = re.compile(r"^(?!rnnkit::).*(lstm|gru|rnn_tanh|rnn_relu|mkldnn_rnn|cudnn_rnn)")


def dotted(node):
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def names_used(tree):
    """Every dotted name the code reads, and every name it imports (as module.name)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.lineno, dotted(node)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                short = node.module.replace("torch.nn.modules.rnn", "torch.nn").replace("torch.nn", "nn")
                yield node.lineno, f"{short}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_package_source_names_no_recurrent_kernel():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == REFERENCE_MODULE:
            continue
        for lineno, name in names_used(ast.parse(path.read_text())):
            if FORBIDDEN_NAMES.search(name):
                offenders.append(f"{path.relative_to(PACKAGE)}:{lineno}: {name}")
    assert not offenders, "\n".join(offenders)


def test_the_scan_catches_what_it_should():
    code = "import torch\nfrom torch import nn, _VF\nnn.LSTM(1, 2)\ntorch._VF.lstm\ntorch.gru_cell\nfrom torch.nn import GRU\n"
    found = {name for _, name in names_used(ast.parse(code)) if FORBIDDEN_NAMES.search(name)}
    assert found == {"nn.GRU", "nn.LSTM", "torch._VF", "torch._VF.lstm", "torch.gru_cell"}


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        self.ops.add(name if func.namespace == "aten" else f"{func.namespace}::{name}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", MODES)
def test_no_recurrent_aten_op_runs(mode):
    cls, _, extra = MODES[mode]
    layer = cls(4, 5, num_layers=2, bidirectional=True, **extra)
    cell = {"lstm": rnnkit.LSTMCell, "lstm_proj": rnnkit.LSTMCell, "gru": rnnkit.GRUCell}.get(mode, rnnkit.RNNCell)(4, 5)
    x = torch.randn(6, 3, 4, requires_grad=True)
    with OpRecorder() as rec:
        out, _ = layer(x)
        packed_out, _ = layer(pack_padded_sequence(x, [6, 3, 2]))
        h = cell(x[0])
        loss = out.sum() + packed_out.data.sum() + (h[0] if isinstance(h, tuple) else h).sum()
        loss.backward()
    bad = sorted(op for op in rec.ops if FORBIDDEN_OPS.search(op))
    assert not bad, bad
    assert "mm" in rec.ops or "addmm" in rec.ops  # the recorder did see the computation

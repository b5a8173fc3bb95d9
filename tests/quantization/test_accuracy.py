"""The int8 error against float is no larger than that of torch's quantize_dynamic on the torch.nn
twin with the same float weights."""
import warnings

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.quantization import quantize_dynamic

from quantization_helpers import relative_error, set_product
from rnnkit.quantization.cpu_features import has_vnni

TWINS = {"lstm": (rnnkit.LSTM, nn.LSTM), "gru": (rnnkit.GRU, nn.GRU)}


def torch_int8(layer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation
        # torch swaps children only, never the model itself: wrap the layer
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), {type(layer)}, dtype=torch.qint8)[0]


# Measured (2 layers, 12 -> 24, T = 15, B = 4, seeds 0-5, this project's AVX-512 EPYC): rnnkit's
# error is 0.52-0.61 of torch's with the VNNI product and 0.26-0.39 with float x int8 weights,
# unidirectional or not (per-row weights, h per row over 8 bits or in float, x over 8 bits or in
# float, against torch's per-tensor weights and 7-bit per-tensor activations).  Asserted: at most
# 0.8 of torch's, a margin against the spread across seeds.
@pytest.mark.parametrize("family", TWINS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_at_most_torchs(family, bidirectional, seed, product):
    ours_cls, torch_cls = TWINS[family]
    torch.manual_seed(seed)
    ours = ours_cls(12, 24, num_layers=2, bidirectional=bidirectional).eval()
    twin = torch_cls(12, 24, num_layers=2, bidirectional=bidirectional).eval()
    twin.load_state_dict(ours.state_dict())
    q, tq = set_product(quantize_dynamic(ours), product), torch_int8(twin)
    assert type(tq) is not torch_cls  # torch's really quantized
    x = torch.randn(15, 4, 12)
    with torch.no_grad():
        ours_error = relative_error(q(x)[0], ours(x)[0])
        torch_error = relative_error(tq(x)[0], twin(x)[0])
    # "fbgemm_input" (opt-in, for speed) rounds x as torch does, to 7 bits per tensor where the CPU lacks
    # VNNI: measured 0.91-1.09 of torch's error on these models (six seeds, AVX2 EPYC), below it on the
    # tutorial LM (benchmarks/quantized_lm.py); asserted: within 1.2 of torch's, against the spread
    bound = 1.2 if product == "fbgemm_input" and not has_vnni() else 0.8
    assert 0 < ours_error <= bound * torch_error, (ours_error, torch_error)


def test_linear_error_at_most_torchs():
    # measured: 0.52 of torch's where the CPU has VNNI (x over 8 bits), equal without (7 bits, as torch)
    torch.manual_seed(0)
    linear = nn.Linear(64, 200).eval()
    ours, theirs = quantize_dynamic(nn.Sequential(linear))[0], torch_int8(linear)
    x = torch.randn(30, 64)
    with torch.no_grad():
        assert relative_error(ours(x), linear(x)) <= relative_error(theirs(x), linear(x)) * 1.0001

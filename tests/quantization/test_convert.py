"""quantize_dynamic: a copy, never the user's model; torch.ao's path; loud refusals."""
import copy
import warnings

import pytest
import torch
from torch import nn

import rnnkit
from rnnkit.quantization import (DYNAMIC_MAPPINGS, DynamicQuantizedGRU, DynamicQuantizedLinear,
                                 DynamicQuantizedLSTM, quantize_dynamic)

from quantization_helpers import float_layer


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.encoder = rnnkit.LSTM(6, 8, num_layers=2, bidirectional=True)
        self.decoder = rnnkit.GRU(16, 8)
        self.out = nn.Linear(8, 5)

    def forward(self, tokens):
        return self.out(self.decoder(self.encoder(self.embed(tokens))[0])[0])


def test_the_users_model_is_unchanged():
    torch.manual_seed(0)
    model = Tagger().train()
    before = copy.deepcopy(model.state_dict())
    q = quantize_dynamic(model)
    assert model.training and type(model.encoder) is rnnkit.LSTM and type(model.out) is nn.Linear
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not q.training
    assert (type(q.encoder), type(q.decoder), type(q.out), type(q.embed)) == (
        DynamicQuantizedLSTM, DynamicQuantizedGRU, DynamicQuantizedLinear, nn.Embedding)
    tokens = torch.randint(20, (7, 3))
    with torch.no_grad():
        assert q(tokens).shape == model.eval()(tokens).shape == (7, 3, 5)


def test_bad_calls_say_what_is_wrong():
    q = quantize_dynamic(float_layer("lstm"))
    x = torch.randn(4, 2, 6)
    with pytest.raises(RuntimeError, match="inference only.*training mode.*eval"):
        q.train()(x)
    q.eval()
    with pytest.raises(RuntimeError, match="inference only.*requires grad.*no_grad"):
        q(x.requires_grad_())
    with pytest.raises(ValueError, match="float32 input"):
        q(torch.randn(4, 2, 6, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="input_size"):
        q(torch.randn(4, 2, 5))
    with pytest.raises(TypeError, match=r"\(h_0, c_0\)"):
        q(torch.randn(4, 2, 6), torch.zeros(1, 2, 12))
    with pytest.raises(RuntimeError, match="Expected hidden\\[0\\] size"):
        q(torch.randn(4, 2, 6), (torch.zeros(1, 3, 12), torch.zeros(1, 3, 12)))
    with pytest.raises(ValueError, match="qint8 only"):
        quantize_dynamic(float_layer("gru"), dtype=torch.float16)
    with pytest.raises(ValueError, match="float32 parameters"):
        quantize_dynamic(float_layer("gru").double())
    with pytest.raises(TypeError, match="takes an rnnkit.LSTM, got GRU"):
        DynamicQuantizedLSTM.from_float(float_layer("gru"))


def test_layers_without_an_int8_version_are_named():
    model = nn.Sequential(rnnkit.RNN(4, 5), rnnkit.Recurrent(rnnkit.cells.MinGRUCell, 4, 5), nn.Linear(5, 2))
    with pytest.warns(UserWarning, match=r"left these recurrent modules in float.*0 \(rnnkit.layers.RNN\).*1 "):
        q = quantize_dynamic(model)
    assert type(q[0]) is rnnkit.RNN and type(q[2]) is DynamicQuantizedLinear


def torch_ao_quantize(model, spec, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=kwargs.pop("dtype", torch.qint8), **kwargs)


def test_torch_ao_picks_rnnkits_classes_up():
    model = Tagger().eval()
    q = torch_ao_quantize(model, {rnnkit.LSTM, rnnkit.GRU, nn.Linear})
    assert (type(q.encoder), type(q.decoder)) == (DynamicQuantizedLSTM, DynamicQuantizedGRU)
    assert type(model.encoder) is rnnkit.LSTM  # torch's copy, not the model
    from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings
    mapping = {**get_default_dynamic_quant_module_mappings(), **DYNAMIC_MAPPINGS}  # the explicit form
    q = torch_ao_quantize(model, {rnnkit.LSTM}, mapping=mapping)
    assert type(q.encoder) is DynamicQuantizedLSTM and type(q.decoder) is rnnkit.GRU
    tokens = torch.randint(20, (6, 2))
    with torch.no_grad():
        assert q(tokens).shape == (6, 2, 5)


def test_torch_ao_refuses_loudly_what_rnnkit_cannot_quantize():
    with pytest.raises(NotImplementedError, match="rnnkit.RNN has no dynamically quantized version"):
        torch_ao_quantize(nn.Sequential(rnnkit.RNN(4, 5)), {rnnkit.RNN})
    with pytest.raises(ValueError, match="int8 \\(torch.qint8\\) only.*float16"):
        torch_ao_quantize(nn.Sequential(rnnkit.LSTM(4, 5)), {rnnkit.LSTM}, dtype=torch.float16)

"""Shared pieces of the int8 tests: small float models and the products this CPU can run."""
import torch

import rnnkit
from rnnkit.quantization.cpu_features import has_vnni

# the products to test: the VNNI one only where the CPU has it
PRODUCTS = ["float_x_int8", "fbgemm_input"] + (["vnni"] if has_vnni() else [])


def set_product(model, product):
    for module in model.modules():
        if hasattr(module, "recurrent_product"):
            module.recurrent_product = product
    return model


def relative_error(result, reference):
    return ((result - reference).norm() / reference.norm()).item()


FAMILIES = {
    "lstm": (rnnkit.LSTM, {}),
    "lstm_proj": (rnnkit.LSTM, {"proj_size": 5}),
    "gru": (rnnkit.GRU, {}),
}


def float_layer(family, seed=0, **kwargs):
    cls, extra = FAMILIES[family]
    torch.manual_seed(seed)
    return cls(6, 12, **{**extra, **kwargs}).eval()

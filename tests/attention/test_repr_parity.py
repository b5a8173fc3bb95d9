"""rnnkit's attention modules print as torch.nn's do: the same repr, child by child."""
import warnings

import pytest
import torch.nn.functional as F
from torch import nn

import rnnkit.attention as rka

MHA_CONFIGS = [
    dict(embed_dim=4, num_heads=2),
    dict(embed_dim=4, num_heads=2, dropout=0.1),
    dict(embed_dim=6, num_heads=3, bias=False, batch_first=True),
    dict(embed_dim=6, num_heads=3, kdim=5, vdim=7, add_bias_kv=True, add_zero_attn=True),
]
LAYER_CONFIGS = [
    dict(),
    dict(dropout=0.0, activation="gelu", batch_first=True),
    dict(activation=nn.GELU(), norm_first=True, bias=False, layer_norm_eps=1e-6),
    dict(activation=F.gelu, dropout=0.25),
]


@pytest.mark.parametrize("config", MHA_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_multihead_attention_repr(config):
    ours, theirs = rka.MultiheadAttention(**config), nn.MultiheadAttention(**config)
    assert repr(ours) == repr(theirs)
    assert type(ours.out_proj) is type(theirs.out_proj)


@pytest.mark.parametrize("config", LAYER_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_encoder_layer_repr(config):
    assert repr(rka.TransformerEncoderLayer(4, 2, 8, **config)) == repr(nn.TransformerEncoderLayer(4, 2, 8, **config))


@pytest.mark.parametrize("num_layers,norm", [(1, False), (3, True)])
def test_encoder_repr(num_layers, norm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.nn: "enable_nested_tensor is True, but ..."
        theirs = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8), num_layers,
                                       norm=nn.LayerNorm(4) if norm else None)
    ours = rka.TransformerEncoder(rka.TransformerEncoderLayer(4, 2, 8), num_layers,
                                  norm=nn.LayerNorm(4) if norm else None)
    assert repr(ours) == repr(theirs)

"""The shapes through each structure's model, step by step, read off a real call of the model.

``flow(model, batch, steps)`` runs ``model`` once on a random input of ``batch`` sequences of
``steps`` steps (token ids where the model reads ids) and records what goes in and comes out:
the whole tensors and one step's slice of them.  ``rnnkit explain --structure`` prints it and
the run folders draw it (structure.png).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .classifier import SequenceClassifier
from .generator import SequenceGenerator
from .seq2seq import Seq2Seq
from .sequence_input import directions, output_size, state_size
from .tagger import SequenceTagger

STRUCTURES = {"N-1": SequenceClassifier, "N-N": SequenceTagger, "1-N": SequenceGenerator, "N-M": Seq2Seq}
WHAT = {"N-1": "many-to-one: a sequence in, one vector of scores out",
        "N-N": "many-to-many, aligned: one output per input step",
        "1-N": "one-to-many: one vector in, a sequence out",
        "N-M": "many-to-many, encoder-decoder: a sequence in, another of its own length out"}


@dataclass
class Row:
    tensor: str
    shape: tuple
    axes: str


@dataclass
class Flow:
    structure: str                 # "N-1", "N-N", "1-N", "N-M"
    model: str                     # the model's class name
    steps_in: int                  # input steps (1 for 1-N)
    steps_out: int                 # output steps (1 for N-1)
    step_in: Row                   # what enters the layer at one step
    state: Row                     # the layer's h_t at one step
    step_out: Row                  # what comes out at one output step
    rows: list = field(default_factory=list)   # every tensor, in the order it is computed
    steps: list = field(default_factory=list)  # the computation, one line per stage


def _layout(layer) -> tuple:
    return ("batch", "steps") if layer.batch_first else ("steps", "batch")


def _sizes(layer, batch: int, steps: int) -> tuple:
    return (batch, steps) if layer.batch_first else (steps, batch)


def _layer_rows(layer, batch: int, steps: int, inputs: str) -> list:
    d, h, lay = directions(layer), state_size(layer), layer.num_layers
    seq = _layout(layer)
    out = output_size(layer)
    merged = "" if out == d * h else f" (the directions merged by {getattr(layer, 'merge', '')})"
    return [
        Row("output o", _sizes(layer, batch, steps) + (out,), ", ".join(seq) + f", directions*hidden ({d}*{h})"
            + merged + ": the last layer's h_t at every step"),
        Row("h_n", (lay * d, batch, h), f"num_layers*directions ({lay}*{d}), batch, hidden: the state after "
            f"each sequence's last {inputs}"),
    ]


@torch.no_grad()
def flow(model: nn.Module, batch: int = 3, steps: int = 5, out_steps: int = 4) -> Flow:
    """The shapes through ``model`` (one of STRUCTURES' models) for a random input of that size."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, SequenceClassifier):
            return _classifier(model, batch, steps)
        if isinstance(model, SequenceTagger):
            return _tagger(model, batch, steps)
        if isinstance(model, SequenceGenerator):
            return _generator(model, batch, out_steps)
        if isinstance(model, Seq2Seq):
            return _seq2seq(model, batch, steps, out_steps)
        raise TypeError(f"flow: expected one of {', '.join(c.__name__ for c in STRUCTURES.values())}, got "
                        f"{type(model).__name__}")
    finally:
        model.train(was_training)


def _random_input(model, batch: int, steps: int):
    layer = model.layer
    shape = _sizes(layer, batch, steps)
    if model.embedding is not None:
        return torch.randint(model.embedding.num_embeddings, shape)
    return torch.randn(*shape, layer.input_size)


def _input_rows(model, batch: int, steps: int) -> list:
    layer, seq = model.layer, _layout(model.layer)
    if model.embedding is None:
        return [Row("input x", _sizes(layer, batch, steps) + (layer.input_size,), ", ".join(seq) + ", input_size")]
    return [Row("input ids", _sizes(layer, batch, steps), ", ".join(seq) + ": token ids"),
            Row("embedded x", _sizes(layer, batch, steps) + (layer.input_size,),
                ", ".join(seq) + ", input_size (the embedding)")]


def _classifier(model: SequenceClassifier, batch: int, steps: int) -> Flow:
    layer = model.layer
    x = _random_input(model, batch, steps)
    scores, weights = (model(x, return_weights=True) if model.pooling == "attention" else (model(x), None))
    rows = _input_rows(model, batch, steps) + _layer_rows(layer, batch, steps, "step")
    if weights is not None:
        rows.append(Row("weights a", tuple(weights.shape), "batch, steps: attention over the outputs, summing to 1"))
        how = "s = sum_t a_t o_t (attention pooling)"
    else:
        how = "s = [forward h_T ; reverse h_1] of the last layer (last state)"
    rows += [Row("summary s", (batch, model.summary_size), "batch, features: " + how),
             Row("scores", tuple(scores.shape), "batch, num_classes")]
    d, h = directions(layer), state_size(layer)
    return Flow("N-1", type(model).__name__, steps, 1, Row("x_t", (batch, layer.input_size), "batch, input_size"),
                Row("h_t", (batch, d * h), "batch, directions*hidden"), Row("scores", tuple(scores.shape),
                                                                            "batch, num_classes"),
                rows, [f"read x_1 .. x_{steps}: the layer's state h_t after each step", how,
                       "scores = W_o s: one vector per sequence"])


def _tagger(model: SequenceTagger, batch: int, steps: int) -> Flow:
    layer = model.layer
    scores = model(_random_input(model, batch, steps))
    rows = _input_rows(model, batch, steps) + _layer_rows(layer, batch, steps, "step")
    rows.append(Row("scores", tuple(scores.shape), ", ".join(_layout(layer)) + ", num_tags: one label's "
                    "scores per step"))
    return Flow("N-N", type(model).__name__, steps, steps, Row("x_t", (batch, layer.input_size), "batch, input_size"),
                Row("o_t", (batch, output_size(layer)), "batch, directions*hidden"),
                Row("scores_t", (batch, model.num_tags), "batch, num_tags"), rows,
                [f"read x_1 .. x_{steps}" + (" in both directions" if layer.bidirectional else ""),
                 "scores_t = W_o o_t at every step t: one label per input step"])


def _generator(model: SequenceGenerator, batch: int, out_steps: int) -> Flow:
    layer = model.layer
    condition = torch.randn(batch, model.condition_size)
    tokens = torch.full(_sizes(layer, batch, out_steps), model.bos_id)
    scores = model(condition, tokens)
    greedy = model.greedy(condition, max_len=out_steps)
    e, c = model.embedding_dim, model.condition_size
    rows = [Row("condition c", (batch, c), "batch, condition_size"),
            Row("tokens in", tuple(tokens.shape), ", ".join(_layout(layer)) + ": bos, y_1 .. y_{T-1}"),
            Row("step input", (batch, e + c), f"batch, embedding+condition ({e}+{c}): [E y_(t-1) ; c]")]
    rows += _layer_rows(layer, batch, out_steps, "step")
    rows += [Row("scores", tuple(scores.shape), ", ".join(_layout(layer)) + ", vocab: the next token's scores"),
             Row("generated", (batch, greedy.size(1)), "batch, steps: token ids (greedy, sampling or beam)")]
    return Flow("1-N", type(model).__name__, 1, out_steps,
                Row("[E y_(t-1) ; c]", (batch, e + c), "batch, embedding+condition"),
                Row("h_t", (batch, state_size(layer)), "batch, hidden"),
                Row("y_t", (batch, model.vocab_size), "batch, vocab"), rows,
                ["start from h_0 = 0 and y_0 = bos", "each step reads [E y_(t-1) ; c]: the vector c at every step",
                 "scores_t = W_o h_t; y_t = the chosen token, fed back at step t+1, until eos"])


def _seq2seq(model: Seq2Seq, batch: int, steps: int, out_steps: int) -> Flow:
    encoder = model.encoder
    src = torch.randint(3, model.src_embed.num_embeddings, (batch, steps))
    tgt_in = torch.full((batch, out_steps), model.bos_id)
    logits, weights = model(src, None, tgt_in, return_attention=True)
    d, h = directions(encoder), state_size(encoder)
    rows = [Row("source ids", (batch, steps), "batch, source steps"),
            Row("embedded", (batch, steps, encoder.input_size), "batch, source steps, embedding"),
            Row("memory m", (batch, steps, model.enc_size), f"batch, source steps, directions*hidden ({d}*{h})"),
            Row("decoder h_0", (batch, model.hidden_size), "batch, hidden: tanh(W_b [h_fwd ; h_bwd])"),
            Row("target in", tuple(tgt_in.shape), "batch, target steps: bos, y_1 .. y_(M-1)")]
    if weights is not None:
        rows.append(Row("attention", tuple(weights.shape), "batch, target steps, source steps"))
    rows.append(Row("logits", tuple(logits.shape), "batch, target steps, target vocab"))
    return Flow("N-M", type(model).__name__, steps, out_steps,
                Row("x_t", (batch, encoder.input_size), "batch, embedding"),
                Row("h_t", (batch, model.hidden_size), "batch, hidden"),
                Row("y_t", (batch, model.tgt_vocab_size), "batch, target vocab"), rows,
                [f"the encoder reads x_1 .. x_{steps} into the memory m", "its last states start the decoder",
                 "each decoder step reads y_(t-1)" + (", attends over m" if weights is not None else "")
                 + " and scores y_t, until eos: M need not equal N"])


__all__ = ["flow", "Flow", "Row", "STRUCTURES", "WHAT"]

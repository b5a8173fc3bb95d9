"""What the structure models share: checking the recurrent layer they wrap, and turning every
torch.nn input form (padded + lengths, either layout, or a PackedSequence) into one packed batch.

Every model runs its layer on a PackedSequence, so a padded step never reaches a cell: padding
cannot change a result, whatever it holds.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

LAYER_ATTRIBUTES = ("input_size", "hidden_size", "num_layers", "bidirectional")


def check_layer(layer, model: str) -> None:
    """TypeError/ValueError unless ``layer`` is a recurrent layer a structure model can wrap."""
    if not isinstance(layer, nn.Module) or not all(hasattr(layer, a) for a in LAYER_ATTRIBUTES):
        raise TypeError(f"{model}: layer should be an rnnkit recurrent layer (rnnkit.RNN, LSTM, GRU or "
                        f"rnnkit.Recurrent(cell, ...)), got {type(layer).__name__}")
    if getattr(layer, "return_states", False):
        raise ValueError(f"{model}: the layer should return (output, h_n): build it with return_states=False")
    if getattr(layer, "stateful", False):
        raise ValueError(f"{model}: a stateful layer carries one batch's state into the next; build it with "
                         "stateful=False")


def directions(layer) -> int:
    return 2 if layer.bidirectional else 1


def state_size(layer) -> int:
    """The size of one direction's h_t: proj_size for a projected LSTM, else hidden_size."""
    return getattr(layer, "proj_size", 0) or layer.hidden_size


def output_size(layer) -> int:
    """The size of the layer's output at each step (both directions concatenated, unless
    rnnkit.Recurrent merges them by sum, mean or mul)."""
    merged = getattr(layer, "merge", "concat") != "concat"
    return state_size(layer) * (1 if merged else directions(layer))


def last_states(h_n, layer) -> Tensor:
    """h_n (num_layers*D, B, H) of the layer, or an LSTM's (h_n, c_n) -> the last layer's final
    h of each direction side by side, (B, D*H): the forward one after each sequence's last
    step, the reverse one after its first."""
    if isinstance(h_n, tuple):
        h_n = h_n[0]
    d = directions(layer)
    return h_n[-d:].transpose(0, 1).reshape(h_n.size(1), -1)


class PackedBatch(NamedTuple):
    """One batch in packed layout, and how it came in (so an aligned output can go back the same way)."""

    packed: PackedSequence   # data (N, ...) rows of every step, batch_sizes per step
    lengths: Tensor          # (B,) int64 on the CPU, in the batch's own row order
    steps: int               # T of the padded input (the longest length for a PackedSequence)
    was_packed: bool


def check_lengths(lengths, batch: int, steps: int, model: str) -> Tensor:
    """``lengths`` (None: every row is ``steps`` long) -> (B,) int64 on the CPU, each in [1, steps]."""
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.long)
    lengths = torch.as_tensor(lengths)
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"{model}: lengths should hold integers, got {lengths.dtype}")
    lengths = lengths.to("cpu", torch.long)
    if lengths.shape != (batch,):
        raise ValueError(f"{model}: lengths should have shape ({batch},), one length per sequence, got "
                         f"{tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"{model}: lengths should lie in [1, {steps}] (the input has {steps} steps), got min "
                         f"{int(lengths.min())} and max {int(lengths.max())}")
    return lengths


def pack(input, lengths, batch_first: bool, step_dims: int, model: str, what: str) -> PackedBatch:
    """Padded ``input`` (+ ``lengths``) or a PackedSequence -> PackedBatch.

    ``step_dims``: the dimensions of one step of one sequence (1 for features (F,), 0 for a token
    id); ``what`` names them in messages, e.g. "input_size" or "token ids".
    """
    if isinstance(input, PackedSequence):
        if lengths is not None:
            raise ValueError(f"{model}: lengths is for a padded input; a PackedSequence carries its own")
        if input.data.dim() != 1 + step_dims:
            raise ValueError(f"{model}: expected a PackedSequence of {what} (data with {1 + step_dims} "
                             f"dimensions), got data of shape {tuple(input.data.shape)}")
        sizes = input.batch_sizes
        counts = (torch.arange(int(sizes[0])).unsqueeze(1) < sizes.unsqueeze(0)).sum(1)  # (B,) sorted order
        unsorted = input.unsorted_indices
        lengths = counts if unsorted is None else counts.index_select(0, unsorted)
        return PackedBatch(input, lengths, int(sizes.numel()), True)
    if not isinstance(input, Tensor) or input.dim() != 2 + step_dims:
        layout = ("(B, T" if batch_first else "(T, B") + (f", {what})" if step_dims else ")")
        raise ValueError(f"{model}: expected a padded {layout} tensor{'' if step_dims else ' of ' + what} "
                         f"(batch_first={batch_first}) or a PackedSequence, got {_describe(input)}")
    batch, steps = (input.size(0), input.size(1)) if batch_first else (input.size(1), input.size(0))
    if batch == 0 or steps == 0:
        raise ValueError(f"{model}: the input needs at least one sequence and one step, got shape "
                         f"{tuple(input.shape)}")
    lengths = check_lengths(lengths, batch, steps, model)
    packed = pack_padded_sequence(input, lengths, batch_first=batch_first, enforce_sorted=False)
    return PackedBatch(packed, lengths, steps, False)


def rows_of_packed(packed: PackedSequence) -> Tensor:
    """For each row of ``packed.data``, the batch row (in the caller's order) it belongs to: (N,)."""
    sizes = packed.batch_sizes
    order = packed.sorted_indices
    if order is None:
        order = torch.arange(int(sizes[0]))
    return torch.cat([order[:int(n)] for n in sizes]).to(packed.data.device)


def with_data(packed: PackedSequence, data: Tensor) -> PackedSequence:
    """The same layout with other rows (an embedding of ids, a read-out of outputs)."""
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)


def packed_features(input, lengths, layer, embedding, model: str) -> tuple:
    """The input of a model that reads either features or token ids -> (PackedBatch, the packed
    features the layer reads).  ``embedding``: None for features (B, T, input_size), else the
    nn.Embedding that turns token ids (B, T) into them."""
    if embedding is None:
        batch = pack(input, lengths, layer.batch_first, 1, model, "input_size")
        data = batch.packed.data
        if not data.is_floating_point():
            raise ValueError(f"{model}: expected floating-point features, got {data.dtype}; a model that reads "
                             "token ids is built with vocab_size")
        if data.size(-1) != layer.input_size:
            raise ValueError(f"{model}: expected {layer.input_size} features per step (the layer's input_size), "
                             f"got {data.size(-1)}")
        return batch, batch.packed
    batch = pack(input, lengths, layer.batch_first, 0, model, "token ids")
    ids = batch.packed.data
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{model}: expected integer token ids (the model was built with vocab_size="
                         f"{embedding.num_embeddings}), got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= embedding.num_embeddings):
        raise ValueError(f"{model}: token ids should lie in [0, {embedding.num_embeddings}), got min "
                         f"{int(ids.min())} and max {int(ids.max())}")
    return batch, with_data(batch.packed, embedding(ids))


def _describe(x) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dim()}-D tensor of shape {tuple(x.shape)}"
    return type(x).__name__


__all__ = ["check_layer", "directions", "state_size", "output_size", "last_states", "PackedBatch", "pack",
           "check_lengths", "rows_of_packed", "with_data", "packed_features"]

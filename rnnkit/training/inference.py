"""A trained model back from its checkpoint, for `rnnkit predict`."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..data.vocab import SPECIALS, Vocab
from ..models.charlm import CharLM
from . import checkpoint
from .config import TrainConfig
from .date_task import DatesTask
from .structure_task import NothingToDraw


class Predictor:
    """``predict(text) -> (output text, attention (len(output), len(text)) or None)``."""

    def __init__(self, path):
        state = checkpoint.load(path)
        # predict draws no held-out set, whatever size the run evaluated on
        self.cfg = replace(TrainConfig.from_dict(state["config"]), device="cpu", eval_size=1)
        vocab = state["vocab"]
        self.task = None
        if self.cfg.task not in ("dates", "lm"):  # a task of the four structures: it rebuilds itself
            self.task = _structure_task(path, self.cfg, vocab)
            build = self.task.build_model
        elif self.cfg.task == "dates":
            task = DatesTask(self.cfg, torch.device("cpu"))
            self.src_vocab = _vocab(path, vocab, "source", len(task.src_vocab))
            self.tgt_vocab = _vocab(path, vocab, "target", len(task.tgt_vocab))
            self.max_len = task.data.max_target_len
            build = task.build_model
        else:
            self.vocab = _vocab(path, vocab, "text")
            build = lambda: CharLM(len(self.vocab), self.cfg.cell, self.cfg.embedding,  # noqa: E731
                                   self.cfg.hidden, self.cfg.layers)
        with torch.device("meta"):  # shapes first: a checkpoint whose config does not match allocates nothing
            checkpoint.check_weights(path, build(), state["model"])
        self.model = build()
        self.model.load_state_dict(state["model"])
        self.model.eval()

    @torch.no_grad()
    def predict(self, text: str, length: int = 200):
        if self.task is not None:
            return self.task.predict(self.model, text), None
        if self.cfg.task != "dates":
            ids = torch.tensor(self.vocab.encode(text))
            out = self.model.sample(ids, length, generator=torch.Generator().manual_seed(self.cfg.seed))
            return text + self.vocab.decode(out.tolist()), None
        src, lengths = self.src_vocab.batch([text])
        out, attn = self.model.greedy(src, lengths, max_len=self.max_len)
        decoded = self.tgt_vocab.decode(out[0].tolist())
        weights = None if attn is None else attn[0, : len(decoded), : len(text)].numpy()
        return decoded, weights

    def picture(self, text: str, output: str, weights):
        """``draw(path)`` for `rnnkit predict --plot`: what the model did with ``text``.  NothingToDraw (one
        line) when the model has nothing to show; ``output`` and ``weights`` are what predict returned."""
        if self.task is not None:
            return self.task.prediction_picture(self.model, text)
        if weights is None:
            reason = "its attention is --attention none" if self.cfg.task == "dates" else "a language model"
            raise NothingToDraw(f"this model has no attention to draw ({reason})")
        from . import plots
        return lambda path: plots.attention_heatmaps([(text, output, weights)], path)


def _structure_task(path, cfg, saved: dict):
    """The checkpoint's task, rebuilt from what it saved (vocabulary, scale) without its data."""
    from .trainer import TASKS

    try:
        return TASKS[cfg.task](cfg, torch.device("cpu"), saved=saved)
    except (KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{path}: what its task {cfg.task} saved beside the weights is not what "
                                         f"rnnkit train writes ({type(e).__name__}: {e})") from None


def _vocab(path, vocab: dict, key: str, size: int | None = None) -> Vocab:
    """The checkpoint's vocabulary ``key``, checked to be one (of ``size`` entries, where the model fixes it)."""
    entry = vocab.get(key)
    itos = entry.get("itos") if isinstance(entry, dict) else None
    if not (isinstance(itos, list) and all(isinstance(c, str) for c in itos) and len(set(itos)) == len(itos)
            and tuple(itos[:len(SPECIALS)]) == SPECIALS):
        raise checkpoint.CheckpointError(f"{path}: its {key} vocabulary is not one rnnkit train writes")
    if size is not None and len(itos) != size:
        raise checkpoint.CheckpointError(f"{path}: its {key} vocabulary has {len(itos)} entries, the model "
                                         f"{size}")
    return Vocab.from_dict(entry)

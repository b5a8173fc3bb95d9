"""A trained model back from its checkpoint, for `rnnkit predict`."""
from __future__ import annotations

import torch

from ..data.vocab import Vocab
from ..models.charlm import CharLM
from . import checkpoint
from .config import TrainConfig
from .date_task import DatesTask


class Predictor:
    """``predict(text) -> (output text, attention (len(output), len(text)) or None)``."""

    def __init__(self, path):
        state = checkpoint.load(path)
        self.cfg = TrainConfig.from_dict(state["config"])
        self.cfg.device = "cpu"
        if self.cfg.task == "dates":
            task = DatesTask(self.cfg, torch.device("cpu"))
            self.model = task.build_model()
            self.src_vocab = Vocab.from_dict(state["vocab"]["source"])
            self.tgt_vocab = Vocab.from_dict(state["vocab"]["target"])
            self.max_len = task.data.max_target_len
        else:
            self.vocab = Vocab.from_dict(state["vocab"]["text"])
            self.model = CharLM(len(self.vocab), self.cfg.cell, self.cfg.embedding, self.cfg.hidden, self.cfg.layers)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise checkpoint.CheckpointError(f"{path}: its weights do not fit the model its config describes "
                                             f"({str(e).splitlines()[0]})") from None
        self.model.eval()

    @torch.no_grad()
    def predict(self, text: str, length: int = 200):
        if self.cfg.task != "dates":
            ids = torch.tensor(self.vocab.encode(text))
            out = self.model.sample(ids, length, generator=torch.Generator().manual_seed(self.cfg.seed))
            return text + self.vocab.decode(out.tolist()), None
        src, lengths = self.src_vocab.batch([text])
        out, attn = self.model.greedy(src, lengths, max_len=self.max_len)
        decoded = self.tgt_vocab.decode(out[0].tolist())
        weights = None if attn is None else attn[0, : len(decoded), : len(text)].numpy()
        return decoded, weights

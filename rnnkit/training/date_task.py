"""Task "dates": a seq2seq model with attention rewrites human dates as ISO dates."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.dates import DateTask
from ..data.vocab import BOS, PAD
from ..models.builders import cell_class, recurrent_layer, snake_name
from ..models.seq2seq import Seq2Seq


class Batch(NamedTuple):
    src: Tensor           # (B, S) source ids
    src_lengths: Tensor   # (B,)
    tgt: Tensor           # (B, T + 1): <bos>, y_1 .. y_T (<eos> last, then <pad>)
    global_tokens: int    # target tokens in the whole global batch, over every rank
    examples: int         # rows in the whole global batch


class DatesTask:
    name = "dates"
    structure = "N-M"  # drawn in structure.png with the trained model's shapes, as the other structures are
    default_bidirectional = True

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        self.data = DateTask(seed=cfg.seed)
        self.src_vocab, self.tgt_vocab = self.data.source_vocab, self.data.target_vocab
        self.heldout = self.data.sample("heldout", cfg.eval_size, seed=0)
        self.max_src_len = self.data.max_source_len
        # structure.png's lengths: the longest source read, the longest target written (with <eos>)
        self.sequence_length, self.output_length = self.max_src_len, self.data.max_target_len

    def build_model(self) -> nn.Module:
        cfg = self.cfg
        encoder = recurrent_layer(cfg.cell, cfg.embedding, cfg.hidden, cfg.layers, cfg.bidirectional)
        family = snake_name(cell_class(cfg.cell).__name__)
        decoder_cell = "lstm" if "lstm" in family else "gru"  # the decoder's state has the encoder's shape
        return Seq2Seq(encoder, len(self.src_vocab), len(self.tgt_vocab), attention=cfg.attention,
                       cell=decoder_cell, embedding_dim=cfg.embedding, max_src_len=self.max_src_len)

    def _encode(self, pairs) -> tuple:
        src, lengths = self.src_vocab.batch([s for s, _ in pairs])
        tgt, _ = self.tgt_vocab.batch([t for _, t in pairs], eos=True)
        tgt = torch.cat([torch.full((len(pairs), 1), BOS), tgt], dim=1)
        return src.to(self.device), lengths, tgt.to(self.device)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> Batch:
        """The global batch of ``step`` (the same on every rank and on resume), this rank's rows of it."""
        pairs = self.data.sample("train", self.cfg.batch_size, seed=step)
        global_tokens = sum(len(t) + 1 for _, t in pairs)
        src, lengths, tgt = self._encode(pairs[rank::world])
        return Batch(src, lengths, tgt, global_tokens, len(pairs))

    def loss_terms(self, model, batch: Batch) -> tuple:
        """(summed cross-entropy, target tokens, correct tokens) of this rank's rows."""
        logits = model(batch.src, batch.src_lengths, batch.tgt[:, :-1])  # (B, T, V)
        target = batch.tgt[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                               ignore_index=PAD, reduction="sum")
        valid = target != PAD
        correct = ((logits.argmax(-1) == target) & valid).sum()
        return loss, int(valid.sum()), int(correct)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        was_training = model.training
        model.eval()
        loss_sum = tokens = exact = 0
        for start in range(0, len(self.heldout), 500):
            pairs = self.heldout[start:start + 500]
            src, lengths, tgt = self._encode(pairs)
            batch = Batch(src, lengths, tgt, 0, 0)
            loss, n, _ = self.loss_terms(model, batch)
            loss_sum, tokens = loss_sum + float(loss), tokens + n
            out, _ = model.greedy(src, lengths, max_len=self.data.max_target_len)
            exact += sum(self.tgt_vocab.decode(row) == t for row, (_, t) in zip(out.tolist(), pairs))
        model.train(was_training)
        return {"heldout_loss": loss_sum / tokens, "exact_match": exact / len(self.heldout)}

    @torch.no_grad()
    def attention_examples(self, model, n: int = 4) -> list:
        """(source, output, weights (len(output), len(source))) for the first n held-out examples."""
        model.eval()
        pairs = self.heldout[:n]
        src, lengths, _ = self._encode(pairs)
        out, attn = model.greedy(src, lengths, max_len=self.data.max_target_len)
        examples = []
        for b, (text, _) in enumerate(pairs):
            decoded = self.tgt_vocab.decode(out[b].tolist())
            if attn is not None:
                examples.append((text, decoded, attn[b, : len(decoded), : len(text)].cpu().numpy()))
        return examples

    def vocab_state(self) -> dict:
        return {"source": self.src_vocab.to_dict(), "target": self.tgt_vocab.to_dict()}

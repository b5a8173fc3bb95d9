"""Character vocabularies with the three special tokens every seq2seq task needs."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


class Vocab:
    """Characters <-> token ids; ids 0, 1, 2 are <pad>, <bos>, <eos>; unknown characters are rejected."""

    def __init__(self, chars: Iterable[str]):
        self.itos = list(SPECIALS) + sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, eos: bool = False) -> list:
        unknown = sorted({c for c in text if c not in self.stoi or c in SPECIALS})
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r}")
        return [self.stoi[c] for c in text] + ([EOS] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return "".join(out)

    def batch(self, texts: Sequence[str], eos: bool = False) -> tuple:
        """Padded (B, S) ids and (B,) lengths."""
        seqs = [self.encode(t, eos) for t in texts]
        lengths = torch.tensor([len(s) for s in seqs])
        ids = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = torch.tensor(s)
        return ids, lengths

    def to_dict(self) -> dict:
        return {"itos": self.itos}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        v = cls([])
        v.itos = list(d["itos"])
        v.stoi = {c: i for i, c in enumerate(v.itos)}
        return v

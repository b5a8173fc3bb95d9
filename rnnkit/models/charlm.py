"""A character-level language model: embedding, any rnnkit recurrent layer, a linear read-out."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .builders import recurrent_layer


class CharLM(nn.Module):
    """``forward(ids (B, T), hx=None) -> (logits (B, T, V), state)``; ``sample`` generates text ids."""

    def __init__(self, vocab_size: int, cell: str = "lstm", embedding: int = 32, hidden: int = 256,
                 layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)
        self.rnn = recurrent_layer(cell, embedding, hidden, layers)
        self.rnn.batch_first = True
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, ids: Tensor, hx=None):
        out, state = self.rnn(self.embed(ids), hx)  # (B, T, H)
        return self.out(out), state

    @torch.no_grad()
    def sample(self, prompt: Tensor, length: int, temperature: float = 0.8,
               generator: torch.Generator | None = None) -> Tensor:
        """Continue ``prompt`` (T0,) by ``length`` ids, drawing each from the softmax at ``temperature``."""
        logits, state = self(prompt.unsqueeze(0))
        out = []
        for _ in range(length):
            probs = torch.softmax(logits[0, -1] / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            out.append(int(nxt))
            logits, state = self(nxt.view(1, 1), state)
        return torch.tensor(out)

"""Spell a number from its value: the 1 -> N task.  342 -> "three hundred forty-two".

The value reaches the model as a vector: one one-hot block of 10 per decimal digit (hundreds,
tens, units), so the model must compose the words from the digits.  A tenth of the numbers
(by a hash of the number) are held out: each is spelled only from what the others taught.
"""
from __future__ import annotations

import random
import zlib

import torch

LARGEST = 999
DIGITS = 3
ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
CHARS = "abcdefghijklmnopqrstuvwxyz -"


def spell(n: int) -> str:
    """0 .. 999 in English words, as written in the US (no "and")."""
    if not 0 <= n <= LARGEST:
        raise ValueError(f"spell: {n} is outside 0..{LARGEST}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    rest = n % 100
    return ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + spell(rest))


def digit_vector(n: int) -> torch.Tensor:
    """(30,) float: the one-hot of each of n's three decimal digits, hundreds first."""
    v = torch.zeros(DIGITS * 10)
    for position, digit in enumerate(f"{n:0{DIGITS}d}"):
        v[position * 10 + int(digit)] = 1.0
    return v


def parse_number(text: str) -> int:
    """The user's text as a number this task spells; ValueError saying what it takes otherwise."""
    text = text.strip()
    if not text.isdigit() or not 0 <= int(text) <= LARGEST:
        raise ValueError(f"expected a whole number from 0 to {LARGEST}, got {text!r}")
    return int(text)


class NumberWordsTask:
    def __init__(self, seed: int = 0, heldout_fraction: float = 0.1):
        self.seed = seed
        cut = int(heldout_fraction * 1000)
        numbers = range(LARGEST + 1)
        self.heldout = [n for n in numbers if zlib.crc32(str(n).encode()) % 1000 < cut]
        self.train = [n for n in numbers if zlib.crc32(str(n).encode()) % 1000 >= cut]
        self.max_len = max(len(spell(n)) for n in numbers) + 1  # + <eos>

    def sample(self, n: int, seed: int) -> list:
        rng = random.Random(f"{self.seed}:numbers:{seed}")
        return [rng.choice(self.train) for _ in range(n)]


__all__ = ["spell", "digit_vector", "parse_number", "NumberWordsTask", "CHARS", "LARGEST"]

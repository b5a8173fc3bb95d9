"""The date task: dates written in many human forms -> ISO dates ("tuesday 3 march 1998" -> "1998-03-03").

Seeded and self-contained.  Held-out dates are disjoint from training dates: every
calendar day belongs to one split, decided by a hash of the day itself, so no date
the model is tested on was seen in training, in any form.
"""
from __future__ import annotations

import datetime as dt
import random
import zlib

from .vocab import Vocab

FIRST, LAST = dt.date(1950, 1, 1), dt.date(2049, 12, 31)  # two-digit years read as 1950..2049
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Each form writes one date; the unambiguous conventions: "3/4/98" is month/day (US),
# "03.04.1998" is day.month (European), as people write them.
FORMS = {
    "weekday d month yyyy": lambda d: f"{DAYS[d.weekday()].lower()} {d.day} {MONTHS[d.month - 1].lower()} {d.year}",
    "m/d/yy": lambda d: f"{d.month}/{d.day}/{d.year % 100:02d}",
    "Month d, yyyy": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "dd.mm.yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "d Mon yyyy": lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    "Wkd, Mon d, yyyy": lambda d: f"{DAYS[d.weekday()][:3]}, {MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "dth of Month yyyy": lambda d: f"{ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    "month dth yyyy": lambda d: f"{MONTHS[d.month - 1].lower()} {ordinal(d.day)} {d.year}",
    "dd-Mon-yy": lambda d: f"{d.day:02d}-{MONTHS[d.month - 1][:3]}-{d.year % 100:02d}",
    "WEEKDAY, MONTH D, YYYY": lambda d: f"{DAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}".upper(),
    "d month yy": lambda d: f"{d.day} {MONTHS[d.month - 1].lower()} {d.year % 100:02d}",
    "Mon d yyyy": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    "mm/dd/yyyy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "yyyymmdd": lambda d: f"{d.year}{d.month:02d}{d.day:02d}",
    "d.m.yy": lambda d: f"{d.day}.{d.month}.{d.year % 100:02d}",
    "yyyy/m/d": lambda d: f"{d.year}/{d.month}/{d.day}",
}


def iso(d: dt.date) -> str:
    return d.isoformat()


def parse_iso(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


class DateTask:
    """Pairs (human form, ISO date) drawn from a seeded generator.

    ``heldout_fraction`` of all calendar days (by a hash of the day) are held out:
    ``sample("train", ...)`` never returns them, ``sample("heldout", ...)`` returns only them.
    """

    name = "dates"

    def __init__(self, seed: int = 0, heldout_fraction: float = 0.1):
        self.seed = seed
        days = (LAST - FIRST).days + 1
        all_days = [FIRST + dt.timedelta(n) for n in range(days)]
        cut = int(heldout_fraction * 1000)
        # The split hashes the day itself (not the seed): it is the same for every run and model.
        self.heldout_days = [d for d in all_days if zlib.crc32(iso(d).encode()) % 1000 < cut]
        self.train_days = [d for d in all_days if zlib.crc32(iso(d).encode()) % 1000 >= cut]
        chars = set("0123456789")
        longest = 0
        for n in range(366):  # every form of every day of a leap year: all month and weekday spellings
            for form in FORMS.values():
                text = form(dt.date(2000, 1, 1) + dt.timedelta(n))
                chars.update(text)
                longest = max(longest, len(text))
        self.max_source_len = longest
        self.source_vocab = Vocab(chars)
        self.target_vocab = Vocab("0123456789-")
        self.max_target_len = 10 + 1  # "yyyy-mm-dd" + <eos>

    def sample(self, split: str, n: int, seed: int) -> list:
        """``n`` pairs (source text, target text) of a split, deterministic in ``seed``."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split should be 'train' or 'heldout', got {split!r}")
        days = self.train_days if split == "train" else self.heldout_days
        rng = random.Random(f"{self.seed}:{split}:{seed}")
        forms = list(FORMS.values())
        pairs = []
        for _ in range(n):
            d = rng.choice(days)
            pairs.append((rng.choice(forms)(d), iso(d)))
        return pairs

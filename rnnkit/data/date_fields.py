"""Tag each character of a written date with its field: the N -> N aligned task.

"tuesday 3 march 1998" -> "wwwwwww.d.mmmmm.yyyy": w weekday, d day, m month, y year, "." anything
else (spaces, separators, "of").  An ordinal's suffix ("3rd") belongs to the day.  Which field a
number is depends on the form around it ("3/4/98" is month/day, "03.04.1998" day.month), so a
tagger must read the context, not the character alone.  The days of each split are those of the
date task's (rnnkit.data.dates): held-out days are never seen in training, in any form.
"""
from __future__ import annotations

import datetime as dt
import random

from .dates import DAYS, MONTHS, DateTask, ordinal
from .vocab import Vocab

TAGS = ".dmyw"  # tag ids 0 .. 4
TAG_NAMES = {".": "other", "d": "day", "m": "month", "y": "year", "w": "weekday"}

# Each field's spellings: a piece of a form is (field, how to write it) or plain text.
FIELDS = {
    "d": lambda d: str(d.day), "dd": lambda d: f"{d.day:02d}", "dth": lambda d: ordinal(d.day),
    "m": lambda d: str(d.month), "mm": lambda d: f"{d.month:02d}", "month": lambda d: MONTHS[d.month - 1].lower(),
    "Month": lambda d: MONTHS[d.month - 1], "Mon": lambda d: MONTHS[d.month - 1][:3],
    "yyyy": lambda d: str(d.year), "yy": lambda d: f"{d.year % 100:02d}",
    "weekday": lambda d: DAYS[d.weekday()].lower(), "Wkd": lambda d: DAYS[d.weekday()][:3],
}
# The same forms as the date task's, written as pieces: {field} is tagged with its field's letter.
FORMS = [
    "{weekday} {d} {month} {yyyy}", "{m}/{d}/{yy}", "{Month} {d}, {yyyy}", "{dd}.{mm}.{yyyy}", "{d} {Mon} {yyyy}",
    "{Wkd}, {Mon} {d}, {yyyy}", "{dth} of {Month} {yyyy}", "{month} {dth} {yyyy}", "{dd}-{Mon}-{yy}",
    "{d} {month} {yy}", "{Mon} {d} {yyyy}", "{mm}/{dd}/{yyyy}", "{yyyy}{mm}{dd}", "{d}.{m}.{yy}", "{yyyy}/{m}/{d}",
]


def tag_of(field: str) -> str:
    return "w" if field in ("weekday", "Wkd") else field[0].lower()


def render(form: str, day: dt.date) -> tuple:
    """(text, tags): the date in ``form`` and one tag letter per character."""
    text, tags = [], []
    for i, part in enumerate(form.replace("}", "{").split("{")):
        if i % 2:  # a field
            piece = FIELDS[part](day)
            text.append(piece)
            tags.append(tag_of(part) * len(piece))
        else:
            text.append(part)
            tags.append("." * len(part))
    return "".join(text), "".join(tags)


class DateFieldsTask:
    """Pairs (date text, tag string of the same length), drawn from a seeded generator."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        split = DateTask(seed=seed)
        self.train_days, self.heldout_days = split.train_days, split.heldout_days
        self.vocab = split.source_vocab
        self.max_len = split.max_source_len

    def sample(self, split: str, n: int, seed: int) -> list:
        if split not in ("train", "heldout"):
            raise ValueError(f"split should be 'train' or 'heldout', got {split!r}")
        days = self.train_days if split == "train" else self.heldout_days
        rng = random.Random(f"{self.seed}:fields:{split}:{seed}")
        return [render(rng.choice(FORMS), rng.choice(days)) for _ in range(n)]


def tag_ids(tags: str) -> list:
    return [TAGS.index(t) for t in tags]


__all__ = ["DateFieldsTask", "TAGS", "TAG_NAMES", "FORMS", "render", "tag_ids", "Vocab"]

"""What the tasks of the four structures share: the run's settings checked against the task, the
batch of each step drawn from the step number alone, and evaluation in eval mode."""
from __future__ import annotations

import random
from contextlib import contextmanager

import torch

from .lm_task import TaskInputError


class NothingToDraw(Exception):
    """Why `rnnkit predict --plot` has no picture of this model's prediction, in one line."""


class StructureTask:
    """A task of ``rnnkit train``; subclasses give the data, the model and the metric.

    ``saved`` (the checkpoint's "vocab" entry) rebuilds a trained task for ``rnnkit predict``
    without reading its data again.
    """

    name = ""
    structure = ""            # "N-1", "N-N", "1-N" or "N-M"
    metric = ""               # the key of evaluate()'s main figure
    default_bidirectional = False
    takes_data = False        # whether --data may replace the embedded data
    reads_left_to_right = False  # a generator: --bidirectional is refused
    defaults: dict = {}       # steps, lr, attention, hidden: what `rnnkit train` uses when they are left out

    def __init__(self, cfg, device, saved: dict | None = None):
        self.cfg, self.device = cfg, device
        if cfg.data is not None and not self.takes_data:
            raise TaskInputError(f"task {self.name} trains on its embedded data; drop --data")
        if cfg.bidirectional and self.reads_left_to_right:
            raise TaskInputError(f"task {self.name} writes its output left to right: drop --bidirectional "
                                 "(or give --no-bidirectional)")

    def draw(self, step: int, population: int, rank: int, world: int) -> torch.Tensor:
        """This rank's share of the global batch of ``step``: indices into ``population`` items, the same
        for every rank count, on every resume."""
        # a string seed: Python's hash() of a str differs from process to process
        seed = random.Random(f"{self.cfg.seed}:{self.name}:{step}").getrandbits(63)
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randint(population, (self.cfg.batch_size,), generator=generator)
        return chosen[rank::world]

    def prediction_picture(self, model, text: str):
        """``draw(path)``: what the model did with ``text`` (`rnnkit predict --plot`); NothingToDraw says why
        there is none, ValueError that ``text`` cannot be read."""
        raise NothingToDraw(f"task {self.name} has no picture of one prediction")

    @contextmanager
    def evaluating(self, model):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            model.train(was_training)

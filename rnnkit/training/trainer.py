"""The training loop: deterministic batches per step, steps that a Ctrl-C never splits, checkpoints."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint, distributed, outputs
from .config import TrainConfig
from .date_tags_task import DateTagsTask
from .date_task import DatesTask
from .digits_task import DigitsTask
from .forecast_task import ForecastTask
from .interrupts import InterruptGate
from .lm_task import LMTask
from .outdir import OutFolder
from .spell_task import SpellTask

# The default seq2seq task (N -> M), the character LM, and one task per structure of the notes.
TASKS = {"dates": DatesTask, "lm": LMTask, "digits": DigitsTask, "date-tags": DateTagsTask,
         "spell-numbers": SpellTask, "forecast": ForecastTask}


class Interrupted(Exception):
    """Ctrl-C.  ``step``: the step checkpoint.pt holds now (None: there is none); ``during``: "training"
    or "outputs" (the final outputs, which an interrupt leaves as they were)."""

    def __init__(self, step, path: Path, during: str = "training", torn: bool = False):
        self.step, self.path, self.during = step, path, during
        kept = f"{path} holds step {step}" if step is not None else "no checkpoint was saved yet"
        if during == "outputs":
            text = f"interrupted while writing the final outputs; nothing in {path.parent} was changed ({kept})"
        elif torn:  # a KeyboardInterrupt that did not come through the gate (e.g. raised by a hook)
            text = f"interrupted in the middle of a step; {kept}"
        else:
            text = f"interrupted at step {step}; checkpoint saved to {path}"
        super().__init__(text)


class ConfigMismatch(Exception):
    pass


def make_task(cfg: TrainConfig, device):
    return TASKS[cfg.task](cfg, device)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Cosine decay from lr to lr/20 over the run: large steps early, fine ones at the end."""
    progress = min(step / max(cfg.steps, 1), 1.0)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig, out, resume: bool = False, progress=None) -> dict:
    """Run (or continue) a training run into ``out``; return its final metrics.

    ``out``: the folder, as a path (claimed here) or an OutFolder its caller has claimed.
    ``progress``: an object with ``start(total, done)``, ``update(step, row)`` and ``stop()``.
    """
    ctx = distributed.from_env(cfg.device)
    claimed = None
    try:
        folder = None
        if ctx.is_main:  # only rank 0 writes
            folder = out if isinstance(out, OutFolder) else OutFolder(out).claim()
            claimed = None if folder is out else folder
        path = out.path if isinstance(out, OutFolder) else Path(out)
        return _train(cfg, path, folder, resume, progress if ctx.is_main else None, ctx)
    finally:
        if claimed is not None:
            claimed.release()
        ctx.close()


def _train(cfg, out, folder, resume, progress, ctx) -> dict:
    torch.manual_seed(cfg.seed)
    task = make_task(cfg, ctx.device)
    model = task.build_model().to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, history, elapsed, window = 0, [], 0.0, _new_window(time.perf_counter())
    ckpt_path = out / checkpoint.NAME
    saved_step = None  # the step checkpoint.pt holds
    if resume:
        state = checkpoint.load(ckpt_path)
        saved = TrainConfig.from_dict(state["config"]).result_settings()
        diff = {k: (saved.get(k), v) for k, v in cfg.result_settings().items() if saved.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ConfigMismatch(f"--resume with a different configuration ({what})")
        checkpoint.restore(ckpt_path, state, model, optimizer)
        step, history, elapsed = int(state["step"]), list(state["history"]), float(state["seconds"])
        window.update({k: state["window"][k] for k in checkpoint.WINDOW} if "window" in state else {})
        saved_step = step
    if folder is not None:  # the run goes ahead: what a killed run left half-written goes
        folder.remove_leftovers(outputs.FILES)
    trained = DistributedDataParallel(model) if ctx.active else model

    def payload(rng) -> dict:
        """The state at the boundary of ``step``: everything a resumed run needs to continue exactly."""
        return {"config": cfg.to_dict(), "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": rng, "history": list(history), "seconds": elapsed,
                "vocab": task.vocab_state(), "window": {k: window[k] for k in checkpoint.WINDOW}}

    def save_checkpoint(rng) -> None:
        try:
            if folder is not None:
                folder.write(checkpoint.NAME, checkpoint.writer(payload(rng)))
        finally:
            ctx.barrier()  # even when rank 0 failed, so no rank waits for it forever

    if progress:
        progress.start(cfg.steps, step)
    model.train()
    # The boundary: step, weights, optimizer, history, window and this RNG state are one moment, and
    # the only one a checkpoint may hold.  Within a step the weights and the optimizer stay the
    # boundary's until the update, which the gate keeps whole with the step counter.
    at_boundary, rng_at_boundary = True, torch.get_rng_state()
    stopping_together = False  # every rank agreed to stop at this boundary
    gate = InterruptGate(wait_for_boundary=True)
    with gate:
        try:
            while step < cfg.steps:
                t_step = time.perf_counter()
                batch = task.batch(step, ctx.rank, ctx.world)
                loss_sum, tokens, correct = task.loss_terms(trained, batch)
                # Normalised by the global batch's tokens; DDP averages gradients over ranks, hence * world:
                # the update is the one a single process would make on the whole global batch.
                (loss_sum * (ctx.world / batch.global_tokens)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                with gate.held():
                    at_boundary = False
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(cfg, step)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                elapsed += time.perf_counter() - t_step
                evaluation = None
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    evaluation = task.evaluate(model) if ctx.is_main else {}
                    ctx.barrier()
                # Summed over ranks every step, so the window is the same on every rank and a checkpoint
                # can carry it; the Ctrl-C flag rides along, so all ranks stop at the same boundary.
                sums = ctx.sum(float(loss_sum.detach()), tokens, correct, float(gate.requested))
                for key, value in zip(checkpoint.WINDOW, sums):
                    window[key] += value
                window["examples"] += batch.examples
                stop = sums[3] > 0
                row = None
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    row = {"step": step, "loss": window["loss"] / window["tokens"],
                           "accuracy": window["correct"] / window["tokens"],
                           "examples_per_sec": window["examples"] / max(now - window["t0"], 1e-9),
                           "seconds": elapsed}
                    window = _new_window(now)
                if evaluation is not None:
                    row = row or {"step": step, "seconds": elapsed}
                    row.update(evaluation)
                if row is not None:
                    history.append(row)
                at_boundary, rng_at_boundary = True, torch.get_rng_state()
                if progress and row is not None:
                    progress.update(step, row)
                if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save_checkpoint(rng_at_boundary)
                    saved_step = step
                # Alone, a process can act on a Ctrl-C that came after the sum above.
                if stop or (gate.requested and not ctx.active):
                    stopping_together = True
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if progress:
                progress.stop()
            with gate.held():
                try:
                    if at_boundary and saved_step != step and folder is not None:
                        folder.write(checkpoint.NAME, checkpoint.writer(payload(rng_at_boundary)))
                        saved_step = step
                finally:
                    # No rank leaves (and has torchrun stop rank 0) before the save.  After a second
                    # Ctrl-C the ranks may be anywhere, and a barrier could wait forever: none then.
                    if stopping_together:
                        ctx.barrier()
            raise Interrupted(saved_step, ckpt_path, torn=not at_boundary) from None
    if progress:
        progress.stop()
    metrics = {}
    try:
        if folder is not None:
            metrics = outputs.write_final(cfg, task, model, history, elapsed, folder, ctx, payload(rng_at_boundary))
    except KeyboardInterrupt:
        raise Interrupted(saved_step, ckpt_path, during="outputs") from None
    finally:
        ctx.barrier()
    return metrics


def _new_window(t0: float) -> dict:
    """Sums over the steps since the last log line (over all ranks), and when they began."""
    return {"loss": 0.0, "tokens": 0, "correct": 0, "examples": 0, "t0": t0}

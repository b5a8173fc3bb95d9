"""The training loop: deterministic batches per step, checkpoints, metrics, pictures."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint, distributed, plots
from .config import TrainConfig
from .date_task import DatesTask
from .lm_task import LMTask

TASKS = {"dates": DatesTask, "lm": LMTask}
CSV_FIELDS = ["step", "loss", "accuracy", "examples_per_sec", "seconds", "heldout_loss", "exact_match"]


class Interrupted(Exception):
    """Ctrl-C during training; the checkpoint was saved first."""

    def __init__(self, step: int, path: Path):
        super().__init__(f"interrupted at step {step}; checkpoint saved to {path}")
        self.step, self.path = step, path


class ConfigMismatch(Exception):
    pass


def make_task(cfg: TrainConfig, device):
    return TASKS[cfg.task](cfg, device)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Cosine decay from lr to lr/20 over the run: large steps early, fine ones at the end."""
    progress = min(step / max(cfg.steps, 1), 1.0)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig, out: Path, resume: bool = False, progress=None) -> dict:
    """Run (or continue) a training run into ``out``; return its final metrics.

    ``progress``: an object with ``start(total, done)``, ``update(step, row)`` and ``stop()``.
    """
    ctx = distributed.from_env(cfg.device)
    try:
        return _train(cfg, Path(out), resume, progress if ctx.is_main else None, ctx)
    finally:
        ctx.close()


def _train(cfg, out, resume, progress, ctx) -> dict:
    torch.manual_seed(cfg.seed)
    task = make_task(cfg, ctx.device)
    model = task.build_model().to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, history, elapsed = 0, [], 0.0
    ckpt_path = out / "checkpoint.pt"
    if resume:
        state = checkpoint.load(ckpt_path)
        saved = TrainConfig.from_dict(state["config"]).result_settings()
        diff = {k: (saved.get(k), v) for k, v in cfg.result_settings().items() if saved.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ConfigMismatch(f"--resume with a different configuration ({what})")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step, history, elapsed = int(state["step"]), list(state["history"]), float(state["seconds"])
    trained = DistributedDataParallel(model) if ctx.active else model

    def save_checkpoint(at_step):
        if ctx.is_main:
            checkpoint.save(ckpt_path, {
                "config": cfg.to_dict(), "step": at_step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                "history": history, "seconds": elapsed, "vocab": task.vocab_state(),
            })
        ctx.barrier()

    if progress:
        progress.start(cfg.steps, step)
    model.train()
    window = _new_window(time.perf_counter())
    try:
        while step < cfg.steps:
            t_step = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, step)
            batch = task.batch(step, ctx.rank, ctx.world)
            loss_sum, tokens, correct = task.loss_terms(trained, batch)
            # Normalised by the global batch's tokens; DDP averages gradients over ranks, hence * world:
            # the update is the one a single process would make on the whole global batch.
            (loss_sum * (ctx.world / batch.global_tokens)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed += time.perf_counter() - t_step
            window["loss"] += float(loss_sum.detach())
            window["tokens"] += tokens
            window["correct"] += correct
            window["examples"] += batch.examples
            row = None
            if step % cfg.log_every == 0 or step == cfg.steps:
                loss, tokens, correct = ctx.sum(window["loss"], window["tokens"], window["correct"])
                now = time.perf_counter()
                row = {"step": step, "loss": loss / tokens, "accuracy": correct / tokens,
                       "examples_per_sec": window["examples"] / max(now - window["t0"], 1e-9),
                       "seconds": elapsed}
                window = _new_window(now)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                row = row or {"step": step, "seconds": elapsed}
                if ctx.is_main:
                    row.update(task.evaluate(model))
                ctx.barrier()
            if row is not None:
                history.append(row)
                if progress:
                    progress.update(step, row)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save_checkpoint(step)
    except KeyboardInterrupt:
        save_checkpoint(step)
        if progress:
            progress.stop()
        raise Interrupted(step, ckpt_path) from None
    if progress:
        progress.stop()
    save_checkpoint(step)
    metrics = {}
    if ctx.is_main:
        metrics = _write_outputs(cfg, task, model, history, elapsed, out, ctx)
    ctx.barrier()
    return metrics


def _new_window(t0: float) -> dict:
    """Sums over the steps since the last log line (this rank's), and when they began."""
    return {"loss": 0.0, "tokens": 0, "correct": 0, "examples": 0, "t0": t0}


def _write_outputs(cfg, task, model, history, elapsed, out, ctx) -> dict:
    last = history[-1]
    final = task.evaluate(model)
    metrics = {
        "task": cfg.task,
        "exact_match": final.get("exact_match"),
        "loss": last.get("loss"),
        "steps": cfg.steps,
        "seconds": round(elapsed, 3),
        "examples_per_sec": round(cfg.steps * cfg.batch_size / max(elapsed, 1e-9), 1),
        **{k: v for k, v in final.items() if k != "exact_match"},
        "world_size": ctx.world,
        "config": cfg.to_dict(),
    }
    if hasattr(task, "samples"):
        metrics["samples"] = task.samples(model)
        (out / "samples.txt").write_text("\n\n".join(metrics["samples"]) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(row)
    plots.loss_curves(history, out / "loss.png", f"rnnkit train: {cfg.task}, {cfg.cell}, {cfg.attention}")
    if hasattr(task, "attention_examples") and cfg.attention != "none":
        plots.attention_heatmaps(task.attention_examples(model), out / "attention.png")
    return metrics

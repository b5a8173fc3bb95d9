"""What a finished run leaves in --out: metrics, loss curves, attention pictures, samples, the final
checkpoint, all put in place together."""
from __future__ import annotations

import csv
import io
import json

from . import checkpoint, plots
from .interrupts import InterruptGate

CSV_FIELDS = ["step", "loss", "accuracy", "examples_per_sec", "seconds", "heldout_loss", "exact_match"]
# Every file a run puts into --out (the tasks of the four structures add structure.png and their own picture).
FILES = (checkpoint.NAME, "metrics.json", "metrics.csv", "loss.png", "attention.png", "samples.txt",
         "structure.png", "confusion.png", "forecast.png", "steps.png")


def write_final(cfg, task, model, history, elapsed, folder, ctx, final_state) -> dict:
    """The metrics, pictures and final checkpoint, put in place together.

    Each file is staged as a complete temporary first; only then are they renamed, the checkpoint
    last, with Ctrl-C held off.  A Ctrl-C or a failed write before that leaves --out as it was.
    """
    last = history[-1] if history else {}
    staged = {}
    with InterruptGate(wait_for_boundary=False) as gate:
        try:
            final = task.evaluate(model)
            metrics = {
                "task": cfg.task,
                "exact_match": final.get("exact_match"),
                "loss": last.get("loss"),
                "steps": cfg.steps,
                "seconds": round(elapsed, 3),
                "examples_per_sec": round(cfg.steps * cfg.batch_size / max(elapsed, 1e-9), 1),
                **{k: v for k, v in final.items() if k != "exact_match"},
                # the tasks of the four structures name theirs; the dates task's metrics stay as they were
                **({"structure": task.structure, "metric": task.metric} if hasattr(task, "metric") else {}),
                "world_size": ctx.world,
                "config": cfg.to_dict(),
            }
            files = {}
            if hasattr(task, "samples"):
                metrics["samples"] = task.samples(model)
                files["samples.txt"] = _text("\n\n".join(metrics["samples"]) + "\n")
            files["metrics.json"] = _text(json.dumps(metrics, indent=2) + "\n")
            files["metrics.csv"] = _text(_csv(history, getattr(task, "csv_fields", ())))
            title = f"rnnkit train: {cfg.task}, {cfg.cell}, {cfg.attention}"
            files["loss.png"] = _picture(lambda f: plots.loss_curves(history, f, title))
            if hasattr(task, "attention_examples") and cfg.attention != "none":
                examples = task.attention_examples(model)
                files["attention.png"] = _picture(lambda f: plots.attention_heatmaps(examples, f))
            if hasattr(task, "pictures"):
                files.update({name: _picture(draw) for name, draw in task.pictures(model).items()})
            if hasattr(task, "structure"):  # every task of the four structures, the default dates task too
                files["structure.png"] = _picture(lambda f: _structure(task, model, f))
            files[checkpoint.NAME] = checkpoint.writer(final_state)
            for name, fill in files.items():
                staged[name] = folder.stage(name, fill)
            with gate.held():
                folder.commit(staged)
        except BaseException:
            folder.discard(staged)
            raise
    return metrics


def _text(text: str):
    data = text.encode()
    return lambda f: f.write(data)


def _structure(task, model, f) -> None:
    """The task's structure drawn with its trained model's shapes: the run's batch size, the task's
    longest sequence (and, where the output has a length of its own, as N-M's has, its longest output)."""
    from ..models.structures import flow
    from .structure_plots import structure_diagram

    batch, steps = task.cfg.batch_size, task.sequence_length
    out_steps = getattr(task, "output_length", steps)
    lengths = f"{steps} steps" if out_steps == steps else f"{steps} steps in, {out_steps} out"
    structure_diagram(flow(model, batch=batch, steps=steps, out_steps=out_steps), f,
                      f"{task.structure}: task {task.name}, {type(model).__name__} (batch {batch}, {lengths})")


def _csv(history: list, task_fields=()) -> str:
    buffer = io.StringIO(newline="")
    fields = CSV_FIELDS + [f for f in task_fields if f not in CSV_FIELDS]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    return buffer.getvalue()


def _picture(draw):
    """``draw(file)``'s PNG, drawn now and written when staged."""
    buffer = io.BytesIO()
    draw(buffer)
    data = buffer.getvalue()
    return lambda f: f.write(data)

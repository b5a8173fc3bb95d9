"""The live progress bar (rich) and the closing summary table."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class RichProgress:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar = None

    def start(self, total: int, done: int) -> None:
        self.bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("acc {task.fields[acc]}"),
            TextColumn("{task.fields[speed]} ex/s"), TextColumn("held-out {task.fields[heldout]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, loss="-", acc="-", speed="-",
                                      heldout="-")

    def update(self, step: int, row: dict) -> None:
        fields = {}
        if "loss" in row:
            fields.update(loss=f"{row['loss']:.4f}", acc=f"{row['accuracy']:.3f}",
                          speed=f"{row['examples_per_sec']:.0f}")
        if "exact_match" in row:
            fields["heldout"] = f"{row['exact_match']:.3f} exact"
        elif "heldout_accuracy" in row:
            fields["heldout"] = f"{row['heldout_accuracy']:.3f} acc"
        elif "step_accuracy" in row:
            fields["heldout"] = f"{row['step_accuracy']:.4f} per step"
        elif "mae_ratio" in row:
            fields["heldout"] = f"MAE {row['mae']:.2f} (naive {row['naive_mae']:.2f})"
        elif "bits_per_char" in row:
            fields["heldout"] = f"{row['bits_per_char']:.3f} bpc"
        self.bar.update(self.task, completed=step, **fields)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def summary(metrics: dict, out, console: Console) -> None:
    table = Table(title=f"rnnkit train: {metrics['task']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in ("exact_match", "heldout_accuracy", "step_accuracy", "whole_dates", "char_accuracy", "mae",
                "naive_mae", "mae_ratio", "accuracy", "bits_per_char", "loss", "heldout_loss", "steps", "seconds",
                "examples_per_sec", "world_size"):
        value = metrics.get(key)
        if value is not None:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row("outputs", str(out))
    console.print(table)

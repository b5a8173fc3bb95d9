"""The pictures a run leaves: loss curves and attention heatmaps."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def loss_curves(history: list, path, title: str) -> None:
    """``path``: a file name or a binary file object."""
    train = [(r["step"], r["loss"]) for r in history if r.get("loss") is not None]
    held = [(r["step"], r["heldout_loss"]) for r in history if r.get("heldout_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="training", lw=1)
    if held:
        ax.plot(*zip(*held), "o-", label="held-out", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path, dpi=120)


def attention_heatmaps(examples: list, path) -> None:
    """``examples``: (source text, output text, weights (len(output), len(source))); ``path``: a file
    name or a binary file object."""
    n = len(examples)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (src, out, w) in zip(axes.flat, examples):
        ax.imshow(w, cmap="viridis", aspect="auto", vmin=0.0)
        ax.set_xticks(range(len(src)))
        ax.set_xticklabels(list(src), fontsize=8)
        ax.set_yticks(range(len(out)))
        ax.set_yticklabels(list(out), fontsize=8)
        ax.set_xlabel("input characters")
        ax.set_ylabel("output characters")
        ax.set_title(f"{src!r} -> {out!r}", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    _save(fig, path, dpi=120)


def gate_heatmaps(traces: dict, gates: tuple, path: Path, title: str) -> None:
    """One heatmap per gate (columns) and layer-direction (rows): hidden units x time, batch row 0."""
    keys = sorted(traces)
    fig, axes = plt.subplots(len(keys), len(gates), figsize=(3.2 * len(gates) + 1, 2.6 * len(keys)),
                             squeeze=False)
    for r, key in enumerate(keys):
        for c, gate in enumerate(gates):
            values = traces[key][gate][:, 0].T.cpu().numpy()  # (H, T)
            ax = axes[r][c]
            image = ax.imshow(values, aspect="auto", cmap="magma" if gate != "g" else "coolwarm",
                              interpolation="nearest")
            ax.set_title(f"{gate}  (layer {key[0]}{', reverse' if key[1] else ''})", fontsize=9)
            ax.set_xlabel("step t")
            ax.set_ylabel("hidden unit")
            fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title)
    _save(fig, path, dpi=110)


def _save(fig, path, dpi: int) -> None:
    """A file name picks its format by its suffix; a file object (what a run stages) gets PNG."""
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=dpi, format=None if isinstance(path, (str, os.PathLike)) else "png")
    finally:
        plt.close(fig)

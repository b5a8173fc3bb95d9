"""`rnnkit predict --plot`: one prediction drawn, for the tasks of the four structures (the dates task
draws its attention with plots.attention_heatmaps; a generator's steps use task_plots.token_probabilities)."""
from __future__ import annotations

import numpy as np

from .plots import _save, plt


def attention_over_rows(image, weights, probs, path, title: str) -> None:
    """A digit read row by row: the image, the attention weight the classifier gave each row (step), and
    the probability of each class.  ``image`` (rows, columns), ``weights`` (rows,), ``probs`` (classes,)."""
    image, weights, probs = (np.asarray(a, dtype=float) for a in (image, weights, probs))
    rows = len(weights)
    fig, (ax_image, ax_weights, ax_probs) = plt.subplots(1, 3, figsize=(9, 3.4),
                                                         gridspec_kw={"width_ratios": [1, 1, 1.3]})
    ax_image.imshow(image, cmap="gray_r", vmin=0, vmax=16)
    ax_image.set_yticks(range(rows))
    ax_image.set_yticklabels([f"x_{t}" for t in range(1, rows + 1)], fontsize=7)
    ax_image.set_xticks([])
    ax_image.set_title("input: one row a step", fontsize=9)
    ax_weights.barh(range(rows), weights, color="#e69138")
    ax_weights.set_ylim(rows - 0.5, -0.5)  # row 1 on top, as in the image
    ax_weights.set_yticks(range(rows))
    ax_weights.set_yticklabels([])
    ax_weights.set_xlim(0, max(1e-9, float(weights.max())) * 1.15)
    ax_weights.set_xlabel("attention weight a_t (sum 1)")
    ax_weights.set_title("weight of each step's output", fontsize=9)
    _class_bars(ax_probs, probs, [str(k) for k in range(len(probs))])
    fig.suptitle(title, fontsize=10)
    _save(fig, path, dpi=110)


def tag_probabilities(text: str, probs, tag_names: list, path, title: str) -> None:
    """Each character's tag probabilities (``probs`` (steps, tags)), the chosen tag of each step outlined."""
    probs = np.asarray(probs, dtype=float)
    steps, tags = probs.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * steps + 2.2), 0.45 * tags + 1.9))
    image = ax.imshow(probs.T, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for t, k in enumerate(probs.argmax(1)):
        ax.add_patch(plt.Rectangle((t - 0.5, k - 0.5), 1, 1, fill=False, ec="white", lw=1.2))
    ax.set_xticks(range(steps))
    ax.set_xticklabels(["␣" if c == " " else c for c in text], fontsize=8)
    ax.set_yticks(range(tags))
    ax.set_yticklabels(tag_names, fontsize=8)
    ax.set_xlabel("input character (one step each); outlined: the tag chosen")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, label="probability")
    _save(fig, path, dpi=110)


def forecast_window(values, forecast: float, weights, path, title: str) -> None:
    """The window the forecaster read (``values``, oldest first) and its forecast of the next value; under
    it, the attention weight of each step when the model pools by attention (``weights`` (steps,) or None)."""
    values = np.asarray(values, dtype=float)
    steps = np.arange(1, len(values) + 1)
    panels = 2 if weights is not None else 1
    fig, axes = plt.subplots(panels, 1, figsize=(7.5, 2.2 + 1.6 * panels), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.3][:panels]})
    ax = axes[0, 0]
    ax.plot(steps, values, "k.-", lw=1.2, label="input: the values read")
    ax.plot([steps[-1], steps[-1] + 1], [values[-1], forecast], "--", color="#e69138", lw=1)
    ax.plot([steps[-1] + 1], [forecast], "o", color="#e69138", ms=8, label=f"forecast: {forecast:.2f}")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    if weights is not None:
        axes[1, 0].bar(steps, np.asarray(weights, dtype=float), color="#e69138")
        axes[1, 0].set_ylabel("attention a_t")
    axes[-1, 0].set_xlabel("step (the last one read, then the forecast)")
    _save(fig, path, dpi=110)


def _class_bars(ax, probs, labels: list) -> None:
    chosen = int(probs.argmax())
    colours = ["#6aa84f" if k == chosen else "#9fc5e8" for k in range(len(probs))]
    ax.bar(range(len(probs)), probs, color=colours)
    ax.set_xticks(range(len(probs)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title("scores -> softmax", fontsize=9)

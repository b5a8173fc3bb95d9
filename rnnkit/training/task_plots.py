"""Each task's usual picture: a confusion matrix (classes, tags), a forecast against the truth, the
probabilities a generator gave the tokens it wrote."""
from __future__ import annotations

from .plots import _save, plt


def confusion_matrix(counts, labels: list, path, title: str) -> None:
    """``counts`` (K, K): row = the true class, column = the predicted one."""
    counts = counts.cpu().numpy() if hasattr(counts, "cpu") else counts
    k = len(labels)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.6, 0.45 * k + 2.0))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(k))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = counts.max() if counts.size else 0
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=6.5,
                        color="white" if counts[i, j] > top / 2 else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path, dpi=110)


def forecast(index, truth, predicted, naive, path, title: str, xlabel: str = "step") -> None:
    """Held-out points: the truth, the model's one-step forecasts and the naive "next = last" ones."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(index, truth, "k-", lw=1.5, label="truth")
    ax.plot(index, predicted, "o-", ms=3, lw=1, label="model (one step ahead)")
    ax.plot(index, naive, "--", lw=1, alpha=0.7, label="naive: next = last")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("value")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path, dpi=110)


def token_probabilities(examples: list, path, title: str) -> None:
    """``examples``: (what it was asked, the tokens it wrote (list of str), probabilities (steps, V), the
    vocabulary's labels): one heatmap each, the written token of every step outlined."""
    n = len(examples)
    # one example alone (`rnnkit predict --plot`) gets the room to read the vocabulary's labels
    fig, axes = plt.subplots(n, 1, figsize=(9, max(2.3 * n, 4.5)), squeeze=False)
    for ax, (asked, written, probs, labels) in zip(axes[:, 0], examples):
        ax.imshow(probs.T, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=5 if n > 1 else 6.5)
        ax.set_xticks(range(len(written)))
        ax.set_xticklabels(written, fontsize=7)
        ax.set_xlabel("output step (the token written)")
        ax.set_title(f"{asked} -> {''.join(w for w in written if len(w) == 1)!r}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path, dpi=110)

"""structure.png: the learner's diagram of a structure (inputs below, the layer's steps in the middle,
outputs above), labelled with the shapes of a trained model (rnnkit.models.structures.flow)."""
from __future__ import annotations

from matplotlib.patches import FancyBboxPatch

from ..models.structures import WHAT
from .plots import _save, plt

COLOURS = {"in": "#cfe2f3", "cell": "#fde9c7", "out": "#d9ead3", "vector": "#ead1dc"}
MOST_COLUMNS = 5  # longer sequences are drawn as steps 1, 2, 3, ..., T


def _steps(n: int) -> list:
    """Step labels for n steps: all of them, or 1, 2, 3, ..., n."""
    if n <= MOST_COLUMNS:
        return [str(t) for t in range(1, n + 1)]
    return ["1", "2", "3", "...", str(n)]


def _box(ax, x, y, text, colour, width=0.8, height=0.55):
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.03",
                                fc=colour, ec="#555555", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5)


def _arrow(ax, start, end, dashed=False):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", lw=1, color="#444444",
                                                          linestyle="--" if dashed else "-"))


def _shape(row) -> str:
    return "(" + ", ".join(map(str, row.shape)) + ")"


def structure_diagram(flow, path, title: str = "") -> None:
    """Draw ``flow`` (a rnnkit.models.structures.Flow) to ``path`` (a file name or binary file)."""
    reads = _steps(flow.steps_in) if flow.structure != "1-N" else []
    writes = _steps(flow.steps_out) if flow.structure in ("N-N", "1-N", "N-M") else []
    if flow.structure == "N-N":
        columns = [(t, True, True) for t in reads]
    elif flow.structure == "N-1":
        columns = [(t, True, i == len(reads) - 1) for i, t in enumerate(reads)]
    elif flow.structure == "1-N":  # the vector enters every step, beside the previous token
        columns = [(t, True, True) for t in writes]
    else:  # N-M: the encoder's steps, then the decoder's
        columns = [(t, True, False) for t in reads] + [(t, False, True) for t in writes]
    offset = 0.0
    width = len(columns)
    fig, ax = plt.subplots(figsize=(1.45 * width + 1.6, 4.4))
    y_in, y_cell, y_out = 0.0, 1.15, 2.3
    previous = None
    for i, (step, reads_here, writes_here) in enumerate(columns):
        x = offset + i
        if step == "...":
            ax.text(x, y_cell, "...", ha="center", va="center", fontsize=14)
            previous = None
            continue
        decoder = flow.structure == "N-M" and not reads_here
        state = f"h{'′' if decoder else ''}_{step}"
        _box(ax, x, y_cell, f"{state}\n{_shape(flow.state)}", COLOURS["cell"])
        if previous is not None:
            _arrow(ax, (previous + 0.42, y_cell), (x - 0.42, y_cell))
        if reads_here:
            if flow.structure == "1-N":
                text, colour = f"[y_{int(step) - 1} ; c]" if step.isdigit() else "[y ; c]", COLOURS["vector"]
            else:
                text, colour = f"x_{step}", COLOURS["in"]
            _box(ax, x, y_in, f"{text}\n{_shape(flow.step_in)}", colour)
            _arrow(ax, (x, y_in + 0.3), (x, y_cell - 0.3))
        if writes_here:
            name = "scores" if flow.structure == "N-1" else f"y_{step}"
            _box(ax, x, y_out, f"{name}\n{_shape(flow.step_out)}", COLOURS["out"])
            _arrow(ax, (x, y_cell + 0.3), (x, y_out - 0.3))
            if flow.structure in ("1-N", "N-M") and i + 1 < len(columns) and columns[i + 1][0] != "...":
                target = (x + 0.75, y_in + 0.3) if flow.structure == "1-N" else (x + 0.7, y_cell + 0.3)
                _arrow(ax, (x + 0.3, y_out - 0.15), target, dashed=True)  # fed back as the next input
        previous = x
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-0.9, 2.9)
    ax.axis("off")
    ax.set_title(title or f"{flow.structure}: {flow.model}", fontsize=10)
    ax.text(-0.6, -0.75, f"{flow.structure}, {WHAT[flow.structure]}.  " + "; ".join(flow.steps),
            fontsize=7, va="bottom", wrap=True)
    _save(fig, path, dpi=110)

"""Will it fit?  What a model needs in memory, counted before anything is allocated.

A size typed by mistake (``--hidden 100000000``) would otherwise allocate until the process is
killed or fail deep in the allocator with a traceback; here the parameters are counted on the
meta device (shapes only, no storage) and compared with the memory the machine has free.
"""
from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

# A trained float32 parameter: its value, its gradient and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16
# A held-out or batch example kept as Python text (two short str objects and a tuple, at least).
BYTES_PER_TEXT_EXAMPLE = 100


class TooLarge(ValueError):
    """The sizes asked for need more memory than is available."""


def available_bytes(device: str = "cpu") -> Optional[int]:
    """Memory free for a new allocation on ``device``, or None where it cannot be told."""
    if str(device).startswith("cuda"):
        return int(torch.cuda.mem_get_info()[0])
    found = []
    meminfo = _read("/proc/meminfo")
    for line in (meminfo or "").splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    # A container's own limit can be far below the machine's free memory.
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read(limit_file), _read(usage_file)
        if limit and usage and limit.strip().isdigit() and int(limit) < 1 << 60:
            found.append(max(int(limit) - int(usage), 0))
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(found) if found else None


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def parameter_count(build: Callable[[int], nn.Module], layers: int) -> float:
    """Parameters of ``build(layers)``, counted on the meta device; ``math.inf`` past int64.

    Every layer after the second has the second's shapes, so any depth costs two small builds.
    """
    def count(n: int) -> int:
        try:
            with torch.device("meta"):
                return sum(p.numel() for p in build(n).parameters())
        except (RuntimeError, TypeError, OverflowError) as e:
            if "verflow" in str(e):  # a shape whose element count does not fit in int64
                return math.inf
            raise
    if layers <= 2:
        return count(layers)
    one, two = count(1), count(2)
    return one + (layers - 1) * (two - one)


def largest_fitting(fits: Callable[[int], bool], upper: int) -> Optional[int]:
    """The largest n in 1..upper with fits(n) (fits grows false with n), or None if not even 1."""
    if not fits(1):
        return None
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def human(n: float) -> str:
    """Bytes for people: 1.5 GB (powers of 1000, as disk and memory sizes are sold)."""
    if math.isinf(n):
        return "more than 9.2 EB"  # past int64
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB", "EB"):
        if n < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


def at_least(n: float) -> str:
    """"at least 1.5 GB" for a lower bound; a count past int64 is no bound, just "more than 9.2 EB"."""
    return f"at least {human(n)}" if math.isfinite(n) else human(n)


def count(n: float) -> str:
    return f"{n:.3g}" if math.isfinite(n) else "more than 9.2e18"  # past int64


# -- rnnkit train ------------------------------------------------------------------------------

def _sizing_task(cfg):
    from .trainer import TASKS
    return TASKS[cfg.task](replace(cfg, eval_size=1), torch.device("cpu"))  # no held-out set is drawn


def training_parameters(cfg, task) -> float:
    def build(layers):
        task.cfg = replace(cfg, layers=layers, eval_size=1)
        return task.build_model()
    return parameter_count(build, cfg.layers)


def training_bytes(cfg, task) -> float:
    """A lower bound on what training ``cfg`` holds in memory at once."""
    params = training_parameters(cfg, task)
    if cfg.task == "lm":
        length = cfg.seq_len
    elif hasattr(task, "output_length"):  # N-M (dates): the encoder's steps and the decoder's
        length = task.sequence_length + task.output_length
    else:  # the other structures: their longest sequence
        length = task.sequence_length
    directions = 2 if cfg.bidirectional else 1
    # every layer's outputs at every position are kept for the backward pass
    activations = 4 * cfg.batch_size * length * cfg.layers * directions * cfg.hidden
    examples = BYTES_PER_TEXT_EXAMPLE * (cfg.batch_size + (cfg.eval_size if cfg.task == "dates" else 0))
    return TRAINING_BYTES_PER_PARAMETER * params + activations + examples


def check_training_fits(cfg) -> None:
    """TooLarge, saying what was asked and what fits, when training ``cfg`` cannot fit in memory."""
    available = available_bytes(cfg.device)
    if available is None:
        return
    task = _sizing_task(cfg)
    need = training_bytes(cfg, task)
    if need <= available:
        return
    params = training_parameters(cfg, task)
    largest = largest_fitting(lambda h: training_bytes(replace(cfg, hidden=h), task) <= available, cfg.hidden)
    if largest is not None and largest < cfg.hidden:
        fix = f"the largest --hidden that fits with the other settings is {largest}"
    else:
        fix = "lower --layers, --embedding, --batch-size or --eval-size"
    raise TooLarge(
        f"--hidden {cfg.hidden}, --embedding {cfg.embedding}, --layers {cfg.layers}, --batch-size "
        f"{cfg.batch_size} make a model of {count(params)} parameters, and training it needs "
        f"{at_least(need)} of memory ({TRAINING_BYTES_PER_PARAMETER} bytes a parameter for the weights, "
        f"gradients and Adam's moments, plus activations) where {human(available)} is available; {fix}")

"""What the min cells (Feng et al. 2024, "Were RNNs All We Needed?") share: the positive activation g
of their candidate state and its logarithm, for the log-space parallel scan.

Their recurrences are h_t = a_t * h_{t-1} + b_t with a_t in (0, 1) and b_t > 0 depending on
x_t alone, so h_t = A_t h_0 + sum_{s<=t} (A_t / A_s) b_s with A_t = a_1 ... a_t, computed for
all t at once from cumsum(log a) and logcumsumexp(log b - cumsum(log a)).  ``log_terms``
functions return (log a_t, log b_t); rnnkit/kernels/parallel_scan.py runs them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def g(x: Tensor) -> Tensor:
    """g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise: positive, continuous, increasing."""
    return torch.where(x >= 0, x + 0.5, x.sigmoid())


def log_g(x: Tensor) -> Tensor:
    """log g(x), computed without forming g (no underflow to log 0 for very negative x)."""
    # relu keeps the unused branch's log finite, so its (discarded) gradient is finite too
    return torch.where(x >= 0, (F.relu(x) + 0.5).log(), F.logsigmoid(x))

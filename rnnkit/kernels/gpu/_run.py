"""The time loops of the GPU backend, their CUDA graphs, and the autograd Functions.

Per layer-direction:

forward    G = x W_ih^T + b (all steps, one product); per step: the recurrent product
           (cuBLAS, accumulated into the step's rows of G, or into a scratch for the GRU)
           and one Triton kernel for all the step's pointwise math.
backward   per step (in the opposite order): one Triton kernel for the gate gradients and
           one product dh_{t-1} = dG_t W_hh; then every weight gradient as one product
           over all steps, dx = dG W_ih.

Launch overhead: the per-step launches of a configuration seen before are captured once
in a CUDA graph (forward and backward separately) and replayed.  A graph is bound to its
buffers, so a cache entry owns them; its outputs are handed out as views of them, and
the entry is reused only when nothing outside holds any of them any more (the storages'
use counts are back to what the entry itself holds).  Otherwise, and the first time a
configuration is seen (which compiles the kernels), the loops run eagerly.
"""
from __future__ import annotations

import collections
import contextlib
from types import SimpleNamespace

import torch
import triton

from ...cells import CellWeights
from ..differentiable import differentiable_backward, save, saved
from . import _kernels as K

BLOCK = 512
NUM_WARPS = 4
MAX_ENTRIES_PER_KEY = 4
MAX_KEYS = 64  # configurations (shapes and weight addresses) with cached graphs, least recent dropped first
CACHE_BYTES_FRACTION = 0.25  # of the device's memory, at most, held by cached graph buffers

GRAPHS = True  # module switch (tests turn it off to exercise the eager loops alone)
_entries: "collections.OrderedDict[tuple, list]" = collections.OrderedDict()
_warm: set = set()  # configurations whose kernels have run once (compiled): graphs may be captured


def clear_cache() -> None:
    """Drop every cached graph and its buffers (e.g. between benchmark configurations)."""
    _entries.clear()


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


@contextlib.contextmanager
def _tf32(flag: bool):
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = flag
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _use_count(t) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


# ----------------------------------------------------------------------------- layout
class Layout:
    """Offsets and step order of a packed sequence (batch_sizes), both directions."""

    def __init__(self, batch_sizes: tuple):
        self.key = tuple(batch_sizes)
        self.bsz = list(batch_sizes)
        self.T = len(self.bsz)
        self.off = [0]
        for b in self.bsz:
            self.off.append(self.off[-1] + b)
        self.N = self.off[-1]
        self.B = max(self.bsz)
        self._prev = {}

    def steps(self, reverse: bool) -> list:
        """(t, b, o0, prev_off, prev_b) in the order the forward loop runs them."""
        res = []
        for s in range(self.T):
            t = self.T - 1 - s if reverse else s
            tp = t + 1 if reverse else t - 1
            pb = self.bsz[tp] if 0 <= tp < self.T else 0
            res.append((t, self.bsz[t], self.off[t], self.off[tp] if pb else 0, pb))
        return res

    def prev_index(self, reverse: bool, device) -> torch.Tensor:
        """(N,) rows of cat(out, h0) holding the state each row of x read."""
        key = (reverse, str(device))
        if key not in self._prev:
            idx = []
            for t, b, o0, poff, pb in self.steps(reverse):
                idx.append((t, [poff + r if r < pb else self.N + r for r in range(b)]))
            idx.sort()
            flat = [i for _, rows in idx for i in rows]
            self._prev[key] = torch.tensor(flat, dtype=torch.long, device=device)
        return self._prev[key]


_layouts: "collections.OrderedDict[tuple, Layout]" = collections.OrderedDict()


def layout(batch_sizes) -> Layout:
    key = tuple(int(b) for b in batch_sizes)
    lay = _layouts.get(key)
    if lay is None:
        lay = _layouts[key] = Layout(key)
        if len(_layouts) > 256:
            _layouts.popitem(last=False)
    else:
        _layouts.move_to_end(key)
    return lay


class Plan:
    """What a Function needs besides tensors."""

    def __init__(self, cell, lay: Layout, reverse: bool, save: bool, tf32: bool, relu: bool = False, eq=None):
        self.cell, self.lay, self.reverse, self.save, self.tf32, self.relu = cell, lay, reverse, save, tf32, relu
        self.eq = eq  # the recurrence, for the backward that recomputes on the reference loop


# ----------------------------------------------------------------------------- programs
# Each takes the buffer namespace w and launches one direction's whole step loop; the same
# code runs eagerly and under CUDA-graph capture.

def _elman_fwd(w, plan):
    H = w.H
    whh_t = w.w_hh.t()
    for t, b, o0, _, _ in plan.lay.steps(plan.reverse):
        w.G[o0:o0 + b].addmm_(w.h[:b], whh_t)
        K.elman_fwd[_grid(b * H)](w.G, w.h, w.out, o0, b, H=H, RELU=plan.relu, BLOCK=BLOCK,
                                  num_warps=NUM_WARPS)


def _elman_bwd(w, plan):
    H = w.H
    for t, b, o0, _, _ in reversed(plan.lay.steps(plan.reverse)):
        K.elman_bwd[_grid(b * H)](w.out, w.dh, w.dout, w.dG, o0, b, H=H, RELU=plan.relu, BLOCK=BLOCK,
                                  num_warps=NUM_WARPS)
        torch.mm(w.dG[o0:o0 + b], w.w_hh, out=w.dh[:b])


def _lstm_fwd(w, plan):
    H, proj = w.H, w.w_hr is not None
    whh_t = w.w_hh.t()
    whr_t = w.w_hr.t() if proj else None
    for t, b, o0, _, _ in plan.lay.steps(plan.reverse):
        w.G[o0:o0 + b].addmm_(w.h[:b], whh_t)
        K.lstm_fwd[_grid(b * H)](w.G, w.c, w.cs, w.m if proj else w.h, w.out, o0, b, H=H, SAVE=plan.save,
                                 PROJ=proj, BLOCK=BLOCK, num_warps=NUM_WARPS)
        if proj:
            torch.mm(w.m[:b], whr_t, out=w.h[:b])
            w.out[o0:o0 + b].copy_(w.h[:b])


def _lstm_bwd(w, plan):
    H, P, proj = w.H, w.P, w.w_hr is not None
    for t, b, o0, poff, pb in reversed(plan.lay.steps(plan.reverse)):
        if proj:
            K.add_rows[_grid(b * P)](w.dh, w.dout, w.dHs, o0, b, P=P, BLOCK=BLOCK, num_warps=NUM_WARPS)
            torch.mm(w.dHs[o0:o0 + b], w.w_hr, out=w.dm[:b])
        K.lstm_bwd[_grid(b * H)](w.G, w.cs, w.c0, w.dm if proj else w.dh, w.dout, w.dc, w.dG, o0, b, poff, pb,
                                 H=H, ADD_DOUT=not proj, BLOCK=BLOCK, num_warps=NUM_WARPS)
        torch.mm(w.dG[o0:o0 + b], w.w_hh, out=w.dh[:b])


def _gru_fwd(w, plan):
    H = w.H
    whh_t = w.w_hh.t()
    for t, b, o0, _, _ in plan.lay.steps(plan.reverse):
        if w.b_hh is None:
            torch.mm(w.h[:b], whh_t, out=w.gh[:b])
        else:
            torch.addmm(w.b_hh, w.h[:b], whh_t, out=w.gh[:b])
        K.gru_fwd[_grid(b * H)](w.G, w.gh, w.h, w.out, w.HN, o0, b, H=H, SAVE=plan.save, BLOCK=BLOCK,
                                num_warps=NUM_WARPS)


def _gru_bwd(w, plan):
    H = w.H
    for t, b, o0, poff, pb in reversed(plan.lay.steps(plan.reverse)):
        K.gru_bwd[_grid(b * H)](w.G, w.HN, w.out, w.h0, w.dh, w.dout, w.dGh, w.dAn, o0, b, poff, pb, H=H,
                                BLOCK=BLOCK, num_warps=NUM_WARPS)
        w.dh[:b].addmm_(w.dGh[o0:o0 + b], w.w_hh)


PROGRAMS = {"elman": (_elman_fwd, _elman_bwd), "lstm": (_lstm_fwd, _lstm_bwd), "gru": (_gru_fwd, _gru_bwd)}
GATES = {"elman": 1, "lstm": 4, "gru": 3}


# ----------------------------------------------------------------------------- buffers
def _forward_buffers(cell, lay, H, P, dtype, device, save, w_hh, b_hh, w_hr):
    """Everything the forward loop writes, and what backward reads of it."""
    f32 = dict(dtype=torch.float32, device=device)
    dt = dict(dtype=dtype, device=device)
    N, B = lay.N, lay.B
    w = SimpleNamespace(H=H, P=P, w_hh=w_hh, b_hh=b_hh, w_hr=w_hr)
    w.G = torch.empty(N, GATES[cell] * H, **dt)
    w.out = torch.empty(N, P, **dt)
    w.h = torch.empty(B, P, **dt)
    w.h0 = torch.empty(B, P, **dt)
    tracked = [w.G, w.out]
    if cell == "lstm":
        w.c = torch.empty(B, H, **f32)
        w.c0 = torch.empty(B, H, **f32)
        w.cs = torch.empty(N, H, **f32) if save else w.c
        w.m = torch.empty(B, H, **dt) if w_hr is not None else None
        if save:
            tracked.append(w.cs)
    if cell == "gru":
        w.gh = torch.empty(B, 3 * H, **dt)
        w.HN = torch.empty(N, H, **dt) if save else w.gh
        if save:
            tracked.append(w.HN)
    return w, tracked


def _backward_buffers(w, cell, lay, dtype, device):
    f32 = dict(dtype=torch.float32, device=device)
    dt = dict(dtype=dtype, device=device)
    N, B, H, P = lay.N, lay.B, w.H, w.P
    w.dout = torch.empty(N, P, **dt)
    w.dh = torch.empty(B, P, **dt)
    if cell == "gru":
        w.dGh = torch.empty(N, 3 * H, **dt)
        w.dAn = torch.empty(N, H, **dt)
    else:
        w.dG = torch.empty(N, GATES[cell] * H, **dt)
    if cell == "lstm":
        w.dc = torch.empty(B, H, **f32)
        if w.w_hr is not None:
            w.dm = torch.empty(B, H, **dt)
            w.dHs = torch.empty(N, P, **dt)
    w.has_bwd = True


# ----------------------------------------------------------------------------- graph cache
class _Entry:
    def __init__(self, w, tracked, nbytes):
        self.w, self.tracked, self.nbytes = w, tracked, nbytes
        self.baseline = [_use_count(t) for t in tracked]
        self.fwd_graph = None
        self.bwd_graph = None

    def busy(self) -> bool:
        return any(_use_count(t) != n for t, n in zip(self.tracked, self.baseline))

    def hold(self) -> list:
        """Views that keep the entry busy while they live."""
        return [t.view_as(t) for t in self.tracked]


def _cached_bytes() -> int:
    return sum(e.nbytes for pool in _entries.values() for e in pool)


def _capture(program):
    # Each graph gets its own private memory pool (a pool shared by handle is released with the
    # last graph using it, which clear_cache may drop); the programs allocate next to nothing.
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        program()
    return g


def _graphs_possible(x) -> bool:
    return GRAPHS and x.is_cuda and not torch.cuda.is_current_stream_capturing()


def _find_entry(key, make, device):
    """(entry, None) with a free cache entry for key (made, within the memory budget, when none
    is free); (None, buffers or None) when there is none: run eagerly."""
    pool = _entries.get(key)
    if pool is None:
        pool = _entries[key] = []
        while len(_entries) > MAX_KEYS:  # a dropped entry still serves the backward of calls that hold it
            _entries.popitem(last=False)
    _entries.move_to_end(key)
    for e in pool:
        if not e.busy():
            return e, None
    if len(pool) >= MAX_ENTRIES_PER_KEY:
        return None, None
    w, tracked = make()
    # the forward buffers, and about as much again for the backward's
    nbytes = 2 * sum(t.numel() * t.element_size() for t in vars(w).values() if isinstance(t, torch.Tensor))
    budget = CACHE_BYTES_FRACTION * torch.cuda.get_device_properties(device).total_memory
    for k in list(_entries):  # evict free entries, least recently used first
        if _cached_bytes() + nbytes <= budget:
            break
        _entries[k] = [e for e in _entries[k] if e.busy()]
    if _cached_bytes() + nbytes > budget:
        return None, (w, tracked)
    e = _Entry(w, tracked, nbytes)
    _entries[key].append(e)
    return e, None


# ----------------------------------------------------------------------------- the Function
def _reference(plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) -> tuple:
    """RecurrenceFunction's outputs on the reference loop, for a backward that must be differentiable
    (see kernels/differentiable.py); Elman and GRU have no c_n (an empty placeholder, no gradient)."""
    from ..reference import ReferenceKernel
    state0 = (h0,) if c0 is None else (h0, c0)
    out, state = ReferenceKernel().layer(plan.eq, x, plan.lay.bsz, state0, CellWeights(w_ih, w_hh, b_ih, b_hh, w_hr),
                                         plan.reverse)
    return (out, state[0], state[1] if c0 is not None else x.new_empty(0))


class RecurrenceFunction(torch.autograd.Function):
    """One layer-direction of an Elman, LSTM or GRU recurrence on CUDA (see the module docstring).

    Inputs: plan, x (N, I), h0 (B, P), c0 (B, H) or None, w_ih, w_hh, b_ih, b_hh, w_hr.
    Outputs: out (N, P), h_n (B, P), c_n (B, H) (for Elman/GRU an empty tensor, no gradient).
    """

    @staticmethod
    def forward(ctx, plan, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        cell, lay = plan.cell, plan.lay
        dtype, device = x.dtype, x.device
        P = h0.shape[1]
        H = w_hh.shape[1] if w_hr is None else w_hr.shape[1]
        # Weights enter the graphs by address, so their addresses are part of the key.
        w_hh_d = w_hh.detach().contiguous()
        w_hr_d = None if w_hr is None else w_hr.detach().contiguous()
        b_hh_d = None if b_hh is None else b_hh.detach().contiguous()
        if cell == "gru":
            bias_x, bias_h = b_ih, b_hh_d
        else:  # one bias for both products
            bias_x = b_hh if b_ih is None else b_ih if b_hh is None else b_ih + b_hh
            bias_h = None
        shape_key = (cell, lay.key, plan.reverse, plan.save,
                     plan.tf32, plan.relu, dtype, H, P, str(device))
        key = shape_key + (w_hh_d.data_ptr(), None if w_hr_d is None else w_hr_d.data_ptr(),
                           None if bias_h is None else bias_h.data_ptr())
        fwd_program, _ = PROGRAMS[cell]

        def make():
            return _forward_buffers(cell, lay, H, P, dtype, device, plan.save, w_hh_d, bias_h, w_hr_d)

        entry, made = None, None
        if _graphs_possible(x) and ("fwd", shape_key) in _warm:
            entry, made = _find_entry(key, make, device)
        w = entry.w if entry is not None else (made or make())[0]
        with _tf32(plan.tf32):
            torch.addmm(bias_x, x, w_ih.t(), out=w.G) if bias_x is not None else torch.mm(x, w_ih.t(), out=w.G)
            w.h.copy_(h0)
            w.h0.copy_(h0)
            if cell == "lstm":
                w.c.copy_(c0)
                w.c0.copy_(c0)
            if entry is not None:
                if entry.fwd_graph is None:
                    entry.fwd_graph = _capture(lambda: fwd_program(w, plan))
                entry.fwd_graph.replay()
            else:
                fwd_program(w, plan)
                _warm.add(("fwd", shape_key))
        out = w.out.view_as(w.out)
        hN = w.h.clone()
        cN = w.c.to(dtype, copy=True) if cell == "lstm" else x.new_empty(0)
        ctx.plan, ctx.entry, ctx.w, ctx.shape_key = plan, entry, w, shape_key
        if plan.save:
            ctx.hold = entry.hold() if entry is not None else None
            save(ctx, plan, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), ())
            if cell != "lstm":
                ctx.mark_non_differentiable(cN)
        else:
            ctx.mark_non_differentiable(out, hN, cN)
        return out, hN, cN

    @staticmethod
    @differentiable_backward(_reference)
    def backward(ctx, dout, dhN, dcN):
        plan, entry, w = ctx.plan, ctx.entry, ctx.w
        cell, lay = plan.cell, plan.lay
        (x, h0, _, w_ih, w_hh, _, _, w_hr), _ = saved(ctx)
        dtype, device = x.dtype, x.device
        H = w.H
        _, bwd_program = PROGRAMS[cell]
        if not getattr(w, "has_bwd", False):
            _backward_buffers(w, cell, lay, dtype, device)
        with _tf32(plan.tf32):
            w.dout.copy_(dout)
            w.dh.copy_(dhN)
            if cell == "lstm":
                w.dc.copy_(dcN)
            if entry is not None and ("bwd", ctx.shape_key) in _warm and _graphs_possible(x):
                if entry.bwd_graph is None:
                    entry.bwd_graph = _capture(lambda: bwd_program(w, plan))
                entry.bwd_graph.replay()
            else:
                bwd_program(w, plan)
                _warm.add(("bwd", ctx.shape_key))
            need = ctx.needs_input_grad
            if cell == "gru":
                dGh = w.dGh
                dGx = torch.cat((dGh[:, :2 * H], w.dAn), 1)
            else:
                dGh = dGx = w.dG
            dx = torch.mm(dGx, w_ih) if need[1] else None
            dw_ih = torch.mm(dGx.t(), x) if need[4] else None
            dw_hh = None
            if need[5]:
                prev = torch.cat((w.out, w.h0))[lay.prev_index(plan.reverse, device)]
                dw_hh = torch.mm(dGh.t(), prev)
            db_ih = dGx.sum(0) if need[6] else None
            db_hh = (dGh.sum(0) if cell == "gru" else db_ih if db_ih is not None else dGh.sum(0)) \
                if need[7] else None
            dw_hr = None
            if w_hr is not None and need[8]:
                M = (w.G[:, 3 * H:].float() * torch.tanh(w.cs)).to(dtype)  # (N, H): o tanh(c)
                dw_hr = torch.mm(w.dHs.t(), M)
        dh0 = w.dh.clone() if need[2] else None
        dc0 = w.dc.to(dtype, copy=True) if cell == "lstm" and need[3] else None
        return None, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr

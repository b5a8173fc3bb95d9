"""The Triton kernels: one fused pointwise pass per time step, forward and backward.

Imported only when a GPU layer first runs (it imports triton).  Each kernel handles the
``b`` rows of one step, flattened over (row, hidden unit) in blocks of ``BLOCK``
elements; the recurrent matrix product of the step is done before (forward) or after
(backward) by cuBLAS.  Arithmetic is float32 whatever the storage dtype; the LSTM cell
state and its gradient are kept in float32 throughout.

Packed layout: the rows of step t start at row ``o0`` of the (N, *) buffers; the
state a row read at step t came from the previous step of the direction (rows
``prev_off + r`` for ``r < prev_b``) or, past those, from the initial state.
"""
from __future__ import annotations

import triton
import triton.language as tl

_NOSPEC = ["o0", "b", "prev_off", "prev_b"]  # change per step: one compilation for all values


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # exact to float32 rounding away from 0, absolute error ~1e-7 near 0; works in the interpreter
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


# ----------------------------------------------------------------------------- Elman
@triton.jit(do_not_specialize=_NOSPEC)
def elman_fwd(G, h, out, o0, b, H: tl.constexpr, RELU: tl.constexpr, BLOCK: tl.constexpr):
    """h[r] = out[o0 + r] = act(G[o0 + r]) (G already holds x W_ih^T + b + h W_hh^T)."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < b * H
    r = idx // H
    j = idx % H
    row = (o0 + r).to(tl.int64)
    v = tl.load(G + row * H + j, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        a = tl.maximum(v, 0.0)
    else:
        a = _tanh(v)
    a = a.to(out.dtype.element_ty)
    tl.store(h + idx, a, mask=mask)
    tl.store(out + row * H + j, a, mask=mask)


@triton.jit(do_not_specialize=_NOSPEC)
def elman_bwd(out, dh, dout, dG, o0, b, H: tl.constexpr, RELU: tl.constexpr, BLOCK: tl.constexpr):
    """dG[o0 + r] = (dh[r] + dout[o0 + r]) * act'(pre-activation), act' read off the output."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < b * H
    r = idx // H
    j = idx % H
    row = (o0 + r).to(tl.int64)
    hv = tl.load(out + row * H + j, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(dh + idx, mask=mask, other=0.0).to(tl.float32) + \
        tl.load(dout + row * H + j, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        da = tl.where(hv > 0.0, d, 0.0)
    else:
        da = d * (1.0 - hv * hv)
    tl.store(dG + row * H + j, da.to(dG.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- LSTM
@triton.jit(do_not_specialize=_NOSPEC)
def lstm_fwd(G, c, cs, h, out, o0, b, H: tl.constexpr, SAVE: tl.constexpr, PROJ: tl.constexpr,
             BLOCK: tl.constexpr):
    """Gates of step rows o0..o0+b: G pre-activations -> activations (kept when SAVE), c (float32
    carry) updated, cs[o0 + r] = c (float32, when SAVE); m = o tanh(c) goes to h[r] (the m
    buffer when PROJ: the caller applies W_hr) and, without projection, to out[o0 + r]."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < b * H
    r = idx // H
    j = idx % H
    row = (o0 + r).to(tl.int64)
    g = G + row * (4 * H) + j
    i_ = _sigmoid(tl.load(g, mask=mask, other=0.0).to(tl.float32))
    f_ = _sigmoid(tl.load(g + H, mask=mask, other=0.0).to(tl.float32))
    g_ = _tanh(tl.load(g + 2 * H, mask=mask, other=0.0).to(tl.float32))
    o_ = _sigmoid(tl.load(g + 3 * H, mask=mask, other=0.0).to(tl.float32))
    cn = f_ * tl.load(c + idx, mask=mask, other=0.0) + i_ * g_
    tl.store(c + idx, cn, mask=mask)
    m = (o_ * _tanh(cn)).to(h.dtype.element_ty)
    tl.store(h + idx, m, mask=mask)
    if not PROJ:
        tl.store(out + row * H + j, m, mask=mask)
    if SAVE:
        ty = G.dtype.element_ty
        tl.store(g, i_.to(ty), mask=mask)
        tl.store(g + H, f_.to(ty), mask=mask)
        tl.store(g + 2 * H, g_.to(ty), mask=mask)
        tl.store(g + 3 * H, o_.to(ty), mask=mask)
        tl.store(cs + row * H + j, cn, mask=mask)


@triton.jit(do_not_specialize=_NOSPEC)
def lstm_bwd(G, cs, c0, dm, dout, dc, dG, o0, b, prev_off, prev_b, H: tl.constexpr,
             ADD_DOUT: tl.constexpr, BLOCK: tl.constexpr):
    """Gate gradients of step rows o0..o0+b into dG; dc (float32 carry) -> dc of the previous step.

    dm is the gradient of m = o tanh(c) for the step's rows: with ADD_DOUT (no projection,
    m is h) it is dm[r] + dout[o0 + r], else dm[r] as the caller computed it."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < b * H
    r = idx // H
    j = idx % H
    row = (o0 + r).to(tl.int64)
    dmv = tl.load(dm + idx, mask=mask, other=0.0).to(tl.float32)
    if ADD_DOUT:
        dmv += tl.load(dout + row * H + j, mask=mask, other=0.0).to(tl.float32)
    g = G + row * (4 * H) + j
    i_ = tl.load(g, mask=mask, other=0.0).to(tl.float32)
    f_ = tl.load(g + H, mask=mask, other=0.0).to(tl.float32)
    g_ = tl.load(g + 2 * H, mask=mask, other=0.0).to(tl.float32)
    o_ = tl.load(g + 3 * H, mask=mask, other=0.0).to(tl.float32)
    cn = tl.load(cs + row * H + j, mask=mask, other=0.0)
    has_prev = r < prev_b
    prow = (prev_off + r).to(tl.int64)
    cp = tl.where(has_prev, tl.load(cs + prow * H + j, mask=mask & has_prev, other=0.0),
                  tl.load(c0 + idx, mask=mask & (r >= prev_b), other=0.0))
    tc = _tanh(cn)
    dmo = dmv * o_
    dcv = tl.load(dc + idx, mask=mask, other=0.0) + (dmo - dmo * tc * tc)
    dci = dcv * i_
    ty = dG.dtype.element_ty
    d = dG + row * (4 * H) + j
    tl.store(d, (dcv * g_ * (i_ - i_ * i_)).to(ty), mask=mask)
    tl.store(d + H, (dcv * cp * (f_ - f_ * f_)).to(ty), mask=mask)
    tl.store(d + 2 * H, (dci - dci * g_ * g_).to(ty), mask=mask)
    tl.store(d + 3 * H, (dmv * tc * (o_ - o_ * o_)).to(ty), mask=mask)
    tl.store(dc + idx, dcv * f_, mask=mask)


@triton.jit(do_not_specialize=_NOSPEC)
def add_rows(dh, dout, dst, o0, b, P: tl.constexpr, BLOCK: tl.constexpr):
    """dst[o0 + r] = dh[r] + dout[o0 + r] (the gradient of the projected output h of the step)."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < b * P
    r = idx // P
    j = idx % P
    row = (o0 + r).to(tl.int64)
    v = tl.load(dh + idx, mask=mask, other=0.0).to(tl.float32) + \
        tl.load(dout + row * P + j, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst + row * P + j, v.to(dst.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- GRU
@triton.jit(do_not_specialize=_NOSPEC)
def gru_fwd(G, gh, h, out, HN, o0, b, H: tl.constexpr, SAVE: tl.constexpr, BLOCK: tl.constexpr):
    """r, z, n and h' of step rows o0..o0+b from G (x W_ih^T + b_ih) and gh[r] (h W_hh^T + b_hh);
    h'[r] to the carry h and to out; when SAVE, G <- (r, z, n) and HN[o0 + r] <- W_hn h + b_hn."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < b * H
    r = idx // H
    j = idx % H
    row = (o0 + r).to(tl.int64)
    g = G + row * (3 * H) + j
    q = gh + r * (3 * H) + j
    hn = tl.load(q + 2 * H, mask=mask, other=0.0)
    r_ = _sigmoid(tl.load(g, mask=mask, other=0.0).to(tl.float32) + tl.load(q, mask=mask, other=0.0).to(tl.float32))
    z_ = _sigmoid(tl.load(g + H, mask=mask, other=0.0).to(tl.float32) +
                  tl.load(q + H, mask=mask, other=0.0).to(tl.float32))
    n_ = _tanh(tl.load(g + 2 * H, mask=mask, other=0.0).to(tl.float32) + r_ * hn.to(tl.float32))
    hp = tl.load(h + idx, mask=mask, other=0.0).to(tl.float32)
    hv = ((hp - n_) * z_ + n_).to(out.dtype.element_ty)
    tl.store(h + idx, hv, mask=mask)
    tl.store(out + row * H + j, hv, mask=mask)
    if SAVE:
        ty = G.dtype.element_ty
        tl.store(g, r_.to(ty), mask=mask)
        tl.store(g + H, z_.to(ty), mask=mask)
        tl.store(g + 2 * H, n_.to(ty), mask=mask)
        tl.store(HN + row * H + j, hn, mask=mask)


@triton.jit(do_not_specialize=_NOSPEC)
def gru_bwd(G, HN, out, h0, dh, dout, dGh, dAn, o0, b, prev_off, prev_b, H: tl.constexpr,
            BLOCK: tl.constexpr):
    """Gradients of step rows o0..o0+b: dGh[o0 + r] (pre-activations of W_hh's products:
    r, z, and r * d(n pre-activation)), dAn[o0 + r] (n pre-activation, W_ih side), and
    dh[r] <- dh_total * z, the direct path to h_{t-1} (the caller adds dGh W_hh)."""
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < b * H
    r = idx // H
    j = idx % H
    row = (o0 + r).to(tl.int64)
    dht = tl.load(dh + idx, mask=mask, other=0.0).to(tl.float32) + \
        tl.load(dout + row * H + j, mask=mask, other=0.0).to(tl.float32)
    g = G + row * (3 * H) + j
    r_ = tl.load(g, mask=mask, other=0.0).to(tl.float32)
    z_ = tl.load(g + H, mask=mask, other=0.0).to(tl.float32)
    n_ = tl.load(g + 2 * H, mask=mask, other=0.0).to(tl.float32)
    hn = tl.load(HN + row * H + j, mask=mask, other=0.0).to(tl.float32)
    has_prev = r < prev_b
    prow = (prev_off + r).to(tl.int64)
    hp = tl.where(has_prev, tl.load(out + prow * H + j, mask=mask & has_prev, other=0.0).to(tl.float32),
                  tl.load(h0 + idx, mask=mask & (r >= prev_b), other=0.0).to(tl.float32))
    dn = dht * (1.0 - z_)
    dz = dht * (hp - n_)
    dan = dn * (1.0 - n_ * n_)
    dr = dan * hn
    ty = dGh.dtype.element_ty
    d = dGh + row * (3 * H) + j
    tl.store(d, (dr * (r_ - r_ * r_)).to(ty), mask=mask)
    tl.store(d + H, (dz * (z_ - z_ * z_)).to(ty), mask=mask)
    tl.store(d + 2 * H, (dan * r_).to(ty), mask=mask)
    tl.store(dAn + row * H + j, dan.to(ty), mask=mask)
    tl.store(dh + idx, (dht * z_).to(dh.dtype.element_ty), mask=mask)

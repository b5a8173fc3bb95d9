"""Tolerances derived from rounding: how far from the float64 result a correct float32 (or bfloat16,
float16) implementation may be, on any machine.

``rounding_sensitivity(results_of, data)`` reruns a float64 computation with the data and every value
each op computes rounded at random (Monte Carlo arithmetic, RoundingNoise); ``rounding_bound`` turns the
spread into the largest error a correct implementation may have.  ``rnnkit verify`` and the tests use
them where a fixed tolerance would hold only by one machine's rounding.

RoundingNoise is a TorchDispatchMode, which torch exposes only under torch.utils._python_dispatch: this
module is the one place the package reaches for it (tests/verify/test_rounding.py pins it).
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# --- Why the bound holds ---------------------------------------------------------------------------
#
# A float32 implementation rounds every value it computes: it multiplies it by some 1 + d, |d| <= u
# (u = 2^-24, float32's unit roundoff).  To first order its error in a result is the sum of those
# perturbations carried to the result by the derivatives of the computation.  Multiplying every
# element of the data (input, initial state, parameters, the loss's weights) and every value each op
# of the float64 reference computes, forward and backward, by its own 1 + d, |d| <= u (Monte Carlo
# arithmetic: RoundingNoise) samples exactly those perturbations, carried along the same
# derivatives: amplified by a layer norm over few features or a cancellation (1 - h^2 of a
# saturated tanh), damped by a saturated gate, just as the rounding errors are.  So the spread of
# the results over such runs, computed in float64 from seeded draws (the same on every machine, a
# property of the equations and the data, not of any implementation), is the scale of the error of
# every correct float32 implementation.  ROUNDING_FACTOR covers the rest: a value is rounded a few times (a
# product, a sum, an activation good to a few ulps), an inner product of n terms may gather up to n
# roundings, and a given rounding pattern may fall less favourably than the random draws did.  (A
# relu's or a clip's kink is the exception: rounding crosses it only where a value lies within
# ~1e-7 of it, a chance of ~1e-7 per value, fixed by the seeded data, the same on every machine.)
#
# Measured with the data alone perturbed (the first version of this bound), on this project's AMD
# EPYC (Zen 4) under 4 environments (numba codegens for 512-bit
# AVX-512, the host's; 256-bit AVX-512, skylake-avx512, what Intel Xeons get; AVX2, haswell; with
# MKL's default and its MKL_CBWR=COMPATIBLE sgemm, ATen's AVX-512 and AVX2 kernels; tests/kernels/
# test_codegens.py reruns the tests so): the error divided by this sensitivity had a median of ~1 and
# a largest value of 10.1 for the fused layer-norm kernels before their float64 statistics, 9.0 after,
# 8.0 for torch's float32 reference (test_fused_cells.py's layer-norm cases over 60 seeds of parameters
# and data: 9000 results per environment); over every cell family (12 seeds, 5 configurations, 3
# environments) 9.5 for the fused kernels, 9.0 for torch's float32 reference, 9.1 in float64.  The
# tail falls ~8x per 2 units (above 4: 5e-3 of the results, above 8: 2e-4): ROUNDING_FACTOR = 32 is
# 3.4x the largest seen.  A bug is not a rounding: the layer-norm LSTM with its epsilon off by 10% failed
# every case it runs in, float32 by 1.4x the bound or more; a dropped term by 600x or more; float32's
# exp with one coefficient off by 2e-4 (results off by ~1e-5) failed 89 of the 164 float32 cases of
# test_fused.py and test_fused_cells.py (the fixed tolerances before: 23).  float64 results are held to
# the same bound scaled by float64's unit roundoff (2^-53): rounding errors scale with u to first order;
# the largest seen was 9.1 against 64 (two float64 implementations' errors), where the fixed 1e-10
# before allowed 10 (layer-norm LSTM) to 10^4 (torch.nn's cells) times more.
# With every op perturbed too (now), the spreads grow where intermediate roundings matter and the
# ratios fall: on module_db's float32 samples of torch.nn's six modules (tests/test_torch_module_db.py)
# the largest error of rnnkit was 9.1 spreads (51 with the data alone, for an RNN's h_0 gradient) and
# of torch.nn's float32 itself 8.1; the layer-norm LSTM with its epsilon off by 10% still failed every
# case it runs in.
# bfloat16 and float16 keep 8 and 11 significant bits: their unit roundoffs, for the bounds of results
# computed in them (the same first-order reasoning; rounding_sensitivity(dtype=...) draws the noise at
# that size, so that the bound also sees what is not linear at 2^-8).
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53, torch.bfloat16: 2.0 ** -8,
                 torch.float16: 2.0 ** -11}
ROUNDING_FACTOR = 32.0
# bfloat16 and float16 (autocast, the reference loop in those dtypes): each op rounds once to the dtype and
# the products accumulate in float32 (autocast's and the CPU's half-precision matrix products), whose
# roundings are 2^16 (bfloat16) or 2^13 (float16) times smaller: so the one rounding per op that
# RoundingNoise draws is the whole story, and none of ROUNDING_FACTOR's allowance for the n roundings of an
# inner product applies.  Measured here (AMD EPYC Zen 4; the AVX-512 and AVX2 ATen kernels, MKL's default
# and CBWR=COMPATIBLE paths), the error divided by the sensitivity at the dtype's unit roundoff: bfloat16
# autocast against torch.nn's and rnnkit's layers (tests/reliability/test_autocast.py's cases over 40 seeds:
# outputs, states and every gradient, 11680 results) at most 1.36, median 0.30; the reference loop in
# bfloat16 and float16 (5 modes, 1 and 2 bidirectional layers, 30 seeds: 2160 outputs and states) at most
# 0.95.  LOW_PRECISION_ROUNDING_FACTOR = 6 is 4.4x the largest seen (ROUNDING_FACTOR's margin is 3.4x); with
# 32 the bound was 4 to 10 times the fixed tolerances it replaced and caught none of the 2-5% errors they did.
LOW_PRECISION_ROUNDING_FACTOR = 6.0


class RoundingNoise(TorchDispatchMode):
    """Every value an operator computes (forward and backward: autograd's ops pass through the
    dispatcher too) multiplied by its own 1 + d, d uniform in [-u, u]: each op rounded at random, as
    Monte Carlo arithmetic models floating-point rounding.  Perturbing the data alone misses the
    roundings of intermediate values that later cancel: 1 - h^2 of a saturated tanh, computed from a
    rounded h, has a relative error of u / (1 - h^2), which moving the inputs by u never shows (h then
    moves by only u x (1 - h^2)); measured on module_db's samples of torch.nn's RNN (float32 against
    float64), the data-only spread put errors of correct implementations at up to 51 spreads, and at
    2.2 with every op perturbed.  Views and data movement (copy_, fill_, masked_fill_, ...) compute
    nothing new and pass unchanged; an in-place op that computes (sigmoid_, tanh_, add_, addmm_: the
    pointwise ones and those of _COMPUTING_IN_PLACE) has the values it writes rounded where they lie.
    (It rounded none of them before: torch.nn's LSTM and GRU cells apply their sigmoids and tanhs in
    place, and at |x| ~ 1e4, tests/reliability/test_numerics.py, float32's rounding of a saturated gate
    y then moves the weight gradients, through 1 - y, by ~1e3 of the spreads this left.)
    (The dispatch mode lives in torch.utils._python_dispatch: see the module's docstring.)"""

    def __init__(self, u: float, generator: torch.Generator):
        super().__init__()
        self.u, self.generator = u, generator

    def _noise(self, t):
        return 1 + self.u * (2 * torch.rand(t.shape, generator=self.generator, dtype=t.dtype) - 1)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        schema = func._schema
        if schema.is_mutable:
            if torch.Tag.pointwise in func.tags or func.overloadpacket.__name__ in _COMPUTING_IN_PLACE:
                given = list(args) + [kwargs.get(a.name) for a in schema.arguments[len(args):]]
                for arg, value in zip(schema.arguments, given):
                    if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, torch.Tensor) \
                            and value.is_floating_point() and value.numel():
                        value.data.mul_(self._noise(value))  # .data: no version bump, nothing for autograd
            return out
        if any(r.alias_info is not None for r in schema.returns):
            return out

        def noisy(t):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                return t * self._noise(t)
            return t
        return torch.utils._pytree.tree_map(noisy, out)


# in-place ops that compute new values but carry no pointwise tag
_COMPUTING_IN_PLACE = {"addmm_", "addmv_", "addbmm_", "baddbmm_", "addr_", "index_add_", "cumsum_", "cumprod_",
                       "renorm_", "lerp_", "addcmul_", "addcdiv_"}


def rounding_sensitivity(results_of, data, samples=4, seed=0, dtype=torch.float32):
    """(truth, sensitivities): ``results_of(data)`` (a list of float64 tensors computed in torch ops
    from the list of float64 tensors ``data``) and, for each result, the largest change of any of its
    elements over ``samples`` seeded runs in which every element of the data and every value each op
    computes is multiplied by its own 1 + d, d uniform in [-u, u] (u: float32's unit roundoff;
    RoundingNoise), plus u times the result's largest magnitude (storing the result in float32
    rounds it once more).  See ROUNDING_FACTOR for why this bounds float32 errors.
    With ``dtype`` bfloat16 or float16, u is that dtype's unit roundoff, and the sensitivities are
    returned in float32's units (divided by u / 2^-24), so that rounding_bound(s, dtype) scales them
    back: the bound of a result computed in that dtype."""
    u = UNIT_ROUNDOFF[dtype]
    to_float32_units = UNIT_ROUNDOFF[torch.float32] / u
    truth = results_of(data)
    gen = torch.Generator().manual_seed(seed)
    spread = [0.0] * len(truth)
    for _ in range(samples):
        moved_data = [t * (1 + u * (2 * torch.rand(t.shape, generator=gen, dtype=t.dtype) - 1)) for t in data]
        with RoundingNoise(u, gen):
            moved = results_of(moved_data)
        spread = [max(s, (m - t).abs().max().item() if t.numel() else 0.0)
                  for s, m, t in zip(spread, moved, truth)]
    scale = [t.abs().max().item() if t.numel() else 0.0 for t in truth]
    return truth, [(s + u * m) * to_float32_units for s, m in zip(spread, scale)]


def rounding_bound(sensitivity: float, dtype) -> float:
    """The largest error a correct implementation computing in ``dtype`` may have in a result of this
    sensitivity (see ROUNDING_FACTOR; LOW_PRECISION_ROUNDING_FACTOR for bfloat16 and float16): rounding
    errors scale with the unit roundoff."""
    factor = LOW_PRECISION_ROUNDING_FACTOR if dtype in (torch.bfloat16, torch.float16) else ROUNDING_FACTOR
    return factor * sensitivity * UNIT_ROUNDOFF[dtype] / UNIT_ROUNDOFF[torch.float32]

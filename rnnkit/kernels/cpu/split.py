"""The batch split across threads: each thread runs a whole time loop on its own rows.

The rows of a recurrence never mix, so a chunk of rows needs no barrier at any step: one
parallel region per layer-direction (per block of steps in backward), on numba's OpenMP
layer, which shares the thread pool torch already runs (see _jit).

A splittable kernel is an ordinary jitted time loop taking ``(offsets, bsz, lo, hi, *args)``:
the packed layout of its rows, then their range.  ``launch_rows`` calls it once per chunk
through its machine-code address, so the parallel wrapper is compiled once per argument types
and holds no copy of the loop: a ``prange`` loop calling the jitted kernel directly links the
kernel's code into the wrapper and LLVM optimises it all again, measured at 3-4 s more per
kernel on first use; through the address the wrapper costs a fraction of that.
"""
from __future__ import annotations

import os

import numba
import numpy as np
import torch
from numba import prange, types
from numba._dispatcher import compute_fingerprint  # the dispatcher's own per-call type key
from numba.extending import intrinsic

from ._jit import njit

# Rows per thread below which splitting the batch across threads does not pay (the in-loop
# product works on blocks of 4 rows).
MIN_CHUNK_ROWS = 4


def row_chunks(offsets: np.ndarray, bsz: np.ndarray, parts: int):
    """Split the batch rows into ``parts`` contiguous ranges, each run by its own thread through
    the whole time loop: the rows of a recurrence never mix, so no step needs a barrier.

    Returns (cuts (parts+1,), offsets (parts, T+1), sizes (parts, T)): chunk k holds rows
    cuts[k]..cuts[k+1], and its step t has sizes[k, t] rows starting at packed row offsets[k, t].
    Packed rows are sorted by length, longest first, so the cuts balance row-steps, not rows;
    they fall on multiples of 4 where they can (the in-loop product's block).
    """
    B = int(bsz[0])
    lengths = (bsz[None, :] > np.arange(B)[:, None]).sum(1)  # (B,): steps each row runs
    work = np.cumsum(lengths)
    cuts = [0]
    for k in range(1, parts):
        cut = int(np.searchsorted(work, work[-1] * k / parts)) + 1
        rounded = (cut + 2) // 4 * 4
        cut = rounded if cuts[-1] < rounded < B else cut
        if not cuts[-1] < cut < B:
            break
        cuts.append(cut)
    cuts.append(B)
    cuts = np.asarray(cuts, dtype=np.int64)
    lo, hi = cuts[:-1, None], cuts[1:, None]
    return cuts, offsets[None, :] + lo, np.clip(bsz[None, :] - lo, 0, hi - lo)


def thread_parts(batch: int) -> int:
    """How many threads split a batch of ``batch`` rows: torch's thread count, capped by numba's
    and by the rows (1: no split)."""
    most = batch // MIN_CHUNK_ROWS
    if most < 2:
        return 1
    if _launched_in[0] is not None and _launched_in[0] != os.getpid():
        # numba's GNU-OpenMP layer terminates a process forked after it ran; stay serial there.
        return 1
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS, most))


_launched_in = [None]  # the process that first ran a parallel kernel


def run_rows(kernel, plan, *args) -> None:
    """``kernel(offsets, bsz, lo, hi, *args)`` over all batch rows: in one call, or, with
    ``plan.chunks``, each chunk of rows on its own thread."""
    if plan.chunks is None:
        kernel(plan.offsets, plan.bsz, 0, int(plan.bsz[0]), *args)
        return
    cuts, offs, sizes = plan.chunks
    address = native_address(kernel, offs, sizes, args)
    _launched_in[0] = _launched_in[0] or os.getpid()
    before = numba.get_num_threads()
    numba.set_num_threads(min(plan.parts, numba.config.NUMBA_NUM_THREADS))
    try:
        launch_rows(address, cuts, offs, sizes, *args)
    finally:
        numba.set_num_threads(before)


def row_slots(plan, batch: int):
    """(slot (batch,), n): slot[lo] numbers the range of rows starting at row lo (0..n-1), for a kernel
    that keeps one accumulator per range (its thread's own) and has them summed after."""
    slot = np.zeros(batch, dtype=np.int64)
    if plan.chunks is None:
        return slot, 1
    cuts = plan.chunks[0]
    slot[cuts[:-1]] = np.arange(len(cuts) - 1)
    return slot, len(cuts) - 1


_ADDRESSES: dict = {}


def native_address(kernel, offs, sizes, args) -> int:
    """The address of ``kernel``'s machine code for the argument types ``launch_rows`` passes it
    (compiled, or loaded from numba's cache, on first use of these types)."""
    key = (kernel, compute_fingerprint(offs), compute_fingerprint(sizes), *map(compute_fingerprint, args))
    address = _ADDRESSES.get(key)
    if address is None:
        argtypes = (numba.typeof(offs[0]), numba.typeof(sizes[0]), types.int64, types.int64,
                    *map(numba.typeof, args))
        kernel.compile(argtypes)
        compiled = kernel.overloads[argtypes]
        address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_func_name)
        if not address:
            raise RuntimeError(f"numba gave no address for {kernel.py_func.__name__}{argtypes}")
        _ADDRESSES[key] = address
    return address


@intrinsic
def _call_at(typingctx, address, offsets, bsz, lo, hi, args):
    """Call the jitted function at ``address`` with (offsets, bsz, lo, hi, *args), in numba's own
    calling convention; ``native_address`` compiled it for exactly these types.  The status it
    returns is not read: the time loops raise nothing (no bounds checks, error_model="numpy")."""
    argtypes = (offsets, bsz, lo, hi, *args.types)

    def codegen(context, builder, signature, llargs):
        fnty = context.call_conv.get_function_type(types.void, argtypes)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        values = [*llargs[1:5], *(builder.extract_value(llargs[5], i) for i in range(len(args.types)))]
        context.call_conv.call_function(builder, fn, types.void, argtypes, values)
        return context.get_dummy_value()
    return types.void(address, offsets, bsz, lo, hi, args), codegen


@njit(parallel=True)
def launch_rows(address, cuts, offs, sizes, *args):
    """Chunk k (rows cuts[k]..cuts[k+1], laid out by offs[k], sizes[k]) on its own thread."""
    for k in prange(cuts.shape[0] - 1):
        _call_at(address, offs[k], sizes[k], cuts[k], cuts[k + 1], args)

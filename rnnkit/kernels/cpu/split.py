"""The batch split across threads: each thread runs a whole time loop on its own rows.

The rows of a recurrence never mix, so a chunk of rows needs no barrier at any step: one
parallel region per layer-direction (per block of steps in backward), on numba's OpenMP
layer, which shares the thread pool torch already runs (see _jit).

A splittable kernel is an ordinary jitted time loop taking ``(offsets, bsz, lo, hi, *args)``:
the packed layout of its rows, then their range.  Three jitted pieces run it, so that numba's
costliest compilation, a ``prange`` loop (about 1 s, mostly building the parallel region's
argument handling), happens once for all kernels rather than once per argument-type list:

- ``launch_rows`` (per argument types, small) stores the kernel's address and arguments in one
  record on its stack and calls the parallel loop with the record's address;
- ``_parallel_rows`` (compiled once: its arguments are addresses and the chunk layout) runs one
  chunk per thread, calling the unpacker by address;
- ``_unpack_call`` (per argument types, small) loads the record and calls the kernel by address.

Every call goes through a machine-code address: calling a jitted function directly links its
code into the caller, where LLVM optimises it all again (measured at 3-4 s more per kernel).
"""
from __future__ import annotations

import os

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba._dispatcher import compute_fingerprint  # the dispatcher's own per-call type key
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import call_address, native_address, njit

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
    _launched_in[0] = _launched_in[0] or os.getpid()
    before = numba.get_num_threads()
    numba.set_num_threads(min(plan.parts, numba.config.NUMBA_NUM_THREADS))
    try:
        launch_rows(*_addresses(kernel, cuts, offs, sizes, args), cuts, offs, sizes, *args)
    finally:
        numba.set_num_threads(before)


_ADDRESSES: dict = {}


def _addresses(kernel, cuts, offs, sizes, args):
    """(parallel loop, unpacker, kernel): the machine-code addresses ``launch_rows`` calls through,
    compiled (or loaded from numba's cache) on first use of these argument types."""
    key = (kernel, *map(compute_fingerprint, (cuts, offs, sizes, *args)))
    found = _ADDRESSES.get(key)
    if found is None:
        row = (numba.typeof(offs[0]), numba.typeof(sizes[0]), types.int64, types.int64)
        argtypes = tuple(map(numba.typeof, args))
        record = types.Tuple((types.int64, *argtypes))  # (kernel's address, *args)
        layout = tuple(map(numba.typeof, (cuts, offs, sizes)))
        found = _ADDRESSES[key] = (
            native_address(_parallel_rows, (types.int64, types.int64, *layout)),
            native_address(_unpack_call, (*row, types.CPointer(record))),
            native_address(kernel, (*row, *argtypes)),
        )
    return found


@njit
def launch_rows(parallel_at, unpack_at, kernel_at, cuts, offs, sizes, *args):
    """Run the kernel at ``kernel_at`` on every chunk of rows, each on its own thread: its
    arguments go into one record on this frame's stack, which the parallel loop hands by address
    to the unpacker (see the module docstring)."""
    record = _stack_address((kernel_at,) + args)
    _call(parallel_at, (unpack_at, record, cuts, offs, sizes))


@njit(parallel=True, no_cpython_wrapper=True)
def _parallel_rows(unpack_at, record, cuts, offs, sizes):
    """Chunk k (rows cuts[k]..cuts[k+1], laid out by offs[k], sizes[k]) on its own thread."""
    for k in prange(cuts.shape[0] - 1):
        # ``record`` is an int64 here and a typed pointer in the unpacker: the same register.
        _call(unpack_at, (offs[k], sizes[k], cuts[k], cuts[k + 1], record))


@njit(no_cpython_wrapper=True)
def _unpack_call(offsets, bsz, lo, hi, record):
    """The kernel at ``record[0]`` on rows lo..hi, with the arguments ``record`` holds."""
    values = _load(record)
    _call(values[0], (offsets, bsz, lo, hi) + values[1:])


@intrinsic
def _call(typingctx, address, args):
    """Call the jitted function at ``address`` with the values of the tuple ``args``, in numba's
    own calling convention; ``native_address`` compiled it for exactly these types.  The status
    it returns is not read: the time loops raise nothing (no bounds checks, error_model="numpy")."""
    def codegen(context, builder, signature, llargs):
        values = [builder.extract_value(llargs[1], i) for i in range(len(args.types))]
        call_address(context, builder, llargs[0], args.types, values)
        return context.get_dummy_value()
    return types.void(address, args), codegen


@intrinsic
def _stack_address(typingctx, record):
    """A copy of the tuple ``record`` in this frame's stack (laid out as numba stores data), its
    address as an int64: valid until the calling function returns.  It borrows the references
    ``record`` holds; ``_load`` takes its own."""
    def codegen(context, builder, signature, llargs):
        slot = cgutils.alloca_once(builder, context.get_data_type(record))
        context.pack_value(builder, record, llargs[0], slot)
        return builder.ptrtoint(slot, ir.IntType(64))
    return types.int64(record), codegen


@intrinsic
def _load(typingctx, pointer):
    """The value ``pointer`` (a ``CPointer``) points at, stored by ``_stack_address``."""
    def codegen(context, builder, signature, llargs):
        value = context.unpack_value(builder, pointer.dtype, llargs[0])
        context.nrt.incref(builder, pointer.dtype, value)
        return value
    return pointer.dtype(pointer), codegen

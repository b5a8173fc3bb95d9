"""Kernels generated from a cell's own equations (issue 18): any cell, fused.

- ``trace.trace_cell`` / ``trace_equations`` trace a cell's step (a user's module, or a CellEquations)
  (record.py: the aten ops on fake tensors) and split it into what depends on the parameters alone, the input's part (hoisted out
  of the time loop: all steps at once) and the recurrent part, its products with constant weights
  listed for the loop; ``StepPlan.run`` executes that split in torch ops (the reference).
- ``stages.lay_out`` lays the recurrent part out in the loop's slots and stages, each stage's pointwise
  part decomposed into elementwise ops and row-wise reductions, and its backward by reverse mode
  (autograd over it, recorded).
- ``emit_cpp.emit`` writes those graphs as plain C++; ``build`` compiles it with g++ for this CPU,
  cached on disk.
- ``layer`` runs it: one operator, rnnkit::generated_recurrence, its loop and its autograd kernel in C++
  (csrc/cpu/generated_loop.cpp, csrc/autograd.cpp); ``for_cell`` for a user's cell in Recurrent,
  ``GeneratedKernel`` (backend "generated") for any rnnkit cell.
"""
from .trace import Product, StepPlan, trace_cell, trace_equations, trace_step

__all__ = ["Product", "StepPlan", "trace_cell", "trace_equations", "trace_step"]

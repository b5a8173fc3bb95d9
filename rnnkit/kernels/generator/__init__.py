"""Kernels generated from a cell's own equations (issue 18).

Step 1, here: ``trace.trace_cell`` traces any cell's step (rnnkit's or a user's) and splits it into
what depends on the parameters alone, what can be hoisted out of the time loop (the input x_t's part,
for all steps at once), and the recurrent step proper, its products with constant weights listed for
the loop; ``StepPlan.run`` executes that split in torch ops.  Next: generating the fused pointwise
kernel (forward and backward) of the recurrent part and running it in the C++ time loop.
"""
from .trace import Product, StepPlan, trace_cell, trace_step

__all__ = ["Product", "StepPlan", "trace_cell", "trace_step"]

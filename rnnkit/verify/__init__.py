"""Reliability checks of rnnkit against torch.nn and against itself.

- ``rnnkit.verify.fuzz``: differential fuzzing (``rnnkit verify``, tests/reliability/test_fuzz.py).
- ``rnnkit.verify.memory``: what one step of a recurrence costs in saved memory
  (``bytes_per_step``, for ``rnnkit bench`` and the linear-memory tests).
"""

"""Ctrl-C without torn state: an interrupt is held back while the training state is half-updated.

A training step changes the weights, the optimizer's moments, the step counter and the RNG;
a checkpoint must hold all four from one moment.  KeyboardInterrupt can land between any two
bytecodes (e.g. after ``optimizer.step()``, before ``step += 1``), so the trainer installs a
gate: SIGINT only records the request, and the loop stops at the next step boundary.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class InterruptGate:
    """While entered, SIGINT sets ``requested`` instead of raising KeyboardInterrupt.

    ``wait_for_boundary=True`` (the training loop): the first Ctrl-C waits for the loop to
    stop at a step boundary; a second one raises at once, because a user who presses twice
    will not wait (for a hung peer, say), except inside ``held()``.
    ``wait_for_boundary=False`` (the final outputs): every Ctrl-C raises at once except
    inside ``held()``.
    Inside ``held()`` no Ctrl-C raises: it is recorded and the section runs to its end.
    """

    def __init__(self, wait_for_boundary: bool = True):
        self.wait_for_boundary = wait_for_boundary
        self.requested = False
        self._holding = 0
        self._previous = None
        self._installed = False

    def __enter__(self) -> "InterruptGate":
        # Signal handlers can only be set from the main thread, which is also the only thread
        # KeyboardInterrupt is raised in; a process that ignores SIGINT keeps ignoring it.
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(self, *exc) -> bool:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        return False

    def _on_sigint(self, signum, frame) -> None:
        raise_now = not self._holding and (self.requested or not self.wait_for_boundary)
        self.requested = True
        if raise_now:
            raise KeyboardInterrupt

    @contextmanager
    def held(self):
        """A section that no Ctrl-C splits: it completes, and the request waits for the caller."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1

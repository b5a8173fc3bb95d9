#!/usr/bin/env python
"""Run PyTorch's own recurrent-module tests against rnnkit, and against torch.nn for comparison.

rnnkit.RNN/LSTM/GRU/RNNCell/LSTMCell/GRUCell claim to be torch.nn drop-ins, so PyTorch's own
tests of those modules are the sharpest check of the claim.  No PyTorch test code lives in this
repository: point ``--tests-dir`` at a directory holding PyTorch's ``test_modules.py`` and/or
``test_nn.py`` (from a PyTorch checkout of the installed torch's version, or an extract of their
recurrent tests), and the script runs

* in ``test_modules.py``: every test over ``module_db``'s RNN, LSTM, GRU and cell entries;
* in ``test_nn.py``: the RNN/LSTM/GRU tests (``TestNN`` and ``TestNNDeviceType``);

restricted by a pytest ``-k`` expression (default: ``rnn or lstm or gru or variable_sequence``;
pytest matches it case-insensitively against test names).  Only the device types of this
machine are instantiated, so on a CPU build these are the CPU tests.

``--impl rnnkit`` runs them with rnnkit's classes substituted for torch.nn's: ``torch.nn.RNN``
etc. are replaced before the test modules are imported, and module_db's entries get rnnkit's
class while keeping their test names (``nn_LSTM`` ...).  ``--impl torch`` runs them unchanged.
``--impl compare`` (the default) runs both, each in its own process, and lists the tests that
pass on torch.nn and fail on rnnkit, grouped by their error.

PyTorch's test utilities import ``expecttest`` (and test_nn.py ``hypothesis``): install them, or
put them on PYTHONPATH.

Examples::

    python tools/run_pytorch_rnn_tests.py --tests-dir ~/src/pytorch/test
    python tools/run_pytorch_rnn_tests.py --tests-dir DIR --impl rnnkit -- -x -k "test_errors"
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

TEST_FILES = ("test_modules.py", "test_nn.py")
DEFAULT_SELECTION = "rnn or lstm or gru or variable_sequence"
SUBSTITUTED = ("RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell")


def substitute_rnnkit() -> None:
    """Make torch.nn's six recurrent classes, and module_db's entries for them, rnnkit's.

    Must run before PyTorch's test files are imported: they read ``nn.LSTM`` at call time, but
    module_db is built from torch.nn's classes when common_modules is imported.
    """
    import torch
    from torch.testing._internal import common_modules

    import rnnkit

    torch_classes = {name: getattr(torch.nn, name) for name in SUBSTITUTED}
    for name, torch_cls in torch_classes.items():
        ours = getattr(rnnkit, name)
        setattr(torch.nn, name, ours)
        # test names come from this table ("nn.LSTM" -> test_forward_nn_LSTM_...): keep them equal
        common_modules.MODULE_CLASS_NAMES[ours] = common_modules.MODULE_CLASS_NAMES[torch_cls]
    replacements = {torch_cls: getattr(rnnkit, name) for name, torch_cls in torch_classes.items()}
    for info in common_modules.module_db:
        if info.module_cls in replacements:
            info.module_cls = replacements[info.module_cls]


class ResultRecorder:
    """A pytest plugin that keeps each test's outcome and, for a failure, its error line."""

    def __init__(self) -> None:
        self.results: dict = {}

    def pytest_runtest_logreport(self, report) -> None:
        if report.when != "call" and report.passed:
            return  # setup/teardown that went fine says nothing about the test
        if report.when == "teardown" and report.nodeid in self.results and not report.failed:
            return
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        message = ""
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1]
        self.results[report.nodeid] = {"outcome": outcome, "message": message}


def run_one(tests_dir: Path, impl: str, selection: str, pytest_args: list, json_out: str | None) -> int:
    import pytest

    # PyTorch's common_utils parses sys.argv when imported: give it nothing of ours.
    sys.argv = [sys.argv[0]]
    if impl == "rnnkit":
        substitute_rnnkit()
    files = [str(tests_dir / name) for name in TEST_FILES if (tests_dir / name).exists()]
    recorder = ResultRecorder()
    args = [*files, "-k", selection, "-p", "no:cacheprovider", "-q", "--rootdir", str(tests_dir),
            "-c", os.devnull, *pytest_args]
    status = pytest.main(args, plugins=[recorder])
    if json_out:
        Path(json_out).write_text(json.dumps(recorder.results, indent=1, sort_keys=True))
    return int(status)


def _file_of(nodeid: str) -> str:
    return Path(nodeid.split("::", 1)[0]).name


def compare(tests_dir: Path, selection: str, pytest_args: list) -> int:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in ("torch", "rnnkit"):
            out = Path(tmp) / f"{impl}.json"
            command = [sys.executable, __file__, "--tests-dir", str(tests_dir), "--impl", impl,
                       "-k", selection, "--json", str(out), "--", *pytest_args]
            print(f"== running PyTorch's tests on {impl} ...", flush=True)
            subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
            if not out.exists():
                print(f"no results from the {impl} run; rerun with --impl {impl} to see why", file=sys.stderr)
                return 2
            results[impl] = json.loads(out.read_text())

    on_torch, on_rnnkit = results["torch"], results["rnnkit"]
    print("\n== tests passing, per file (torch.nn / rnnkit / run)")
    for name in sorted({_file_of(n) for n in on_torch}):
        ids = [n for n in on_torch if _file_of(n) == name]
        passed_torch = sum(on_torch[n]["outcome"] == "passed" for n in ids)
        passed_rnnkit = sum(on_rnnkit.get(n, {}).get("outcome") == "passed" for n in ids)
        print(f"{name}: {passed_torch} / {passed_rnnkit} / {len(ids)}")

    regressions = sorted(n for n, r in on_torch.items()
                         if r["outcome"] == "passed" and on_rnnkit.get(n, {}).get("outcome") != "passed")
    by_error = defaultdict(list)
    for nodeid in regressions:
        theirs = on_rnnkit.get(nodeid, {"outcome": "not run", "message": ""})
        reason = theirs["message"].strip().splitlines()[0][:200] if theirs["message"] else theirs["outcome"]
        by_error[reason].append(nodeid.split("::")[-1])
    print(f"\n== {len(regressions)} pass on torch.nn and fail on rnnkit")
    for reason, names in sorted(by_error.items(), key=lambda item: -len(item[1])):
        print(f"\n[{len(names)}] {reason}")
        for name in names:
            print(f"    {name}")

    extra = sorted(n for n, r in on_rnnkit.items()
                   if r["outcome"] == "passed" and on_torch.get(n, {}).get("outcome") != "passed")
    if extra:
        print(f"\n== {len(extra)} pass on rnnkit and not on torch.nn")
        for nodeid in extra:
            print(f"    {nodeid.split('::')[-1]}  (torch.nn: {on_torch.get(nodeid, {}).get('outcome', 'not run')})")
    return 1 if regressions else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests-dir", required=True, type=Path,
                        help="directory with PyTorch's test_modules.py and/or test_nn.py")
    parser.add_argument("--impl", choices=("compare", "rnnkit", "torch"), default="compare",
                        help="whose classes to test; compare (default) runs both and lists the differences")
    parser.add_argument("-k", dest="selection", default=DEFAULT_SELECTION,
                        help=f"pytest -k expression selecting the tests (default: {DEFAULT_SELECTION!r})")
    parser.add_argument("--json", dest="json_out", help="write {test id: outcome, message} here")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest as they are")
    args = parser.parse_args(argv)
    tests_dir = args.tests_dir.expanduser().resolve()
    if not any((tests_dir / name).exists() for name in TEST_FILES):
        parser.error(f"{tests_dir} holds none of {', '.join(TEST_FILES)}: give the directory of PyTorch's tests")
    if args.impl == "compare":
        return compare(tests_dir, args.selection, args.pytest_args)
    return run_one(tests_dir, args.impl, args.selection, args.pytest_args, args.json_out)


if __name__ == "__main__":
    sys.exit(main())

"""The final outputs and the checkpoints under faults: a Ctrl-C while the final outputs are written, a
full disk (simulated: os.write fails with ENOSPC on files in --out) and a file size limit (real:
RLIMIT_FSIZE in a child process, so the kernel fails the write with EFBIG).  Each is one line, and
every file in --out is as it was (bytes and mtimes compared); a run afterwards ends as it should."""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faults import assert_same_result, cli_options, one_line_error, snapshot

import rnnkit.training.outputs as outputs
from rnnkit.cli.main import main
from rnnkit.training import plots
from rnnkit.training.date_task import DatesTask
from rnnkit.training.outdir import OutFolder


def resume(out, **changes):
    return main(["train", "--out", str(out), "--resume"] + cli_options(**changes))


# Everything the final stage calls; the Ctrl-C comes just before the first such call there.
FINAL_POINTS = {
    "final evaluation": (DatesTask, "evaluate"),
    "loss curves": (plots, "loss_curves"),
    "attention picture": (plots, "attention_heatmaps"),
    "checkpoint serialised": (torch, "save"),
    "first file staged": (OutFolder, "stage"),
    "files renamed into place": (OutFolder, "commit"),
}


def ctrl_c_in_final_stage(monkeypatch, point, out):
    """Press Ctrl-C at the first call of ``point`` once the final stage has begun; ``state["before"]``:
    the snapshot of ``out`` as the final stage began."""
    state = {"final": False, "fired": False}
    write_final = outputs.write_final

    def final_stage(*args, **kwargs):
        state["final"], state["before"] = True, snapshot(out)
        return write_final(*args, **kwargs)
    monkeypatch.setattr(outputs, "write_final", final_stage)
    owner, name = FINAL_POINTS[point]
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        if state["final"] and not state["fired"]:
            state["fired"] = True
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapped)
    return state


@pytest.mark.parametrize("point", list(FINAL_POINTS))
def test_ctrl_c_during_the_final_outputs_leaves_out_as_it_was(stopped_run, monkeypatch, capsys, quick_plots,
                                                              reference, point):
    with monkeypatch.context() as m:
        state = ctrl_c_in_final_stage(m, point, stopped_run)
        code = resume(stopped_run)
    assert state["fired"]
    err = capsys.readouterr().err
    if point == "files renamed into place":  # held off: the renames finish, the run is complete
        assert code == 0
    else:
        assert code == 2 and one_line_error(err) and "while writing the final outputs" in err
        assert snapshot(stopped_run) == state["before"]
        assert resume(stopped_run) == 0
    assert_same_result(stopped_run, reference)


def fill_disk(monkeypatch, folder: Path, room: int) -> None:
    """From now on the disk holding ``folder`` has ``room`` bytes free: writes to files in it stop there,
    short first, then with ENOSPC, as a real full disk answers."""
    write, inside = os.write, str(folder.resolve()) + os.sep
    left = [room]

    def full_write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not target.startswith(inside):
            return write(fd, data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = write(fd, bytes(data[: left[0]]))
        left[0] -= written
        return written
    monkeypatch.setattr(os, "write", full_write)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file a write goes to")
@pytest.mark.parametrize("checkpoint_every, room", [
    (2, 0),             # the periodic checkpoint at step 4
    (100, 0),           # the final outputs: the first file
    (100, 2_000),       # a later one
    (100, 100_000),     # inside the final checkpoint
])
def test_a_full_disk_is_one_line_and_leaves_out_as_it_was(stopped_run, monkeypatch, capsys, quick_plots,
                                                          reference, checkpoint_every, room):
    before = snapshot(stopped_run)
    with monkeypatch.context() as m:
        fill_disk(m, stopped_run, room)
        assert resume(stopped_run, checkpoint_every=checkpoint_every) == 2
    err = capsys.readouterr().err
    assert one_line_error(err), err
    assert f"the disk holding {stopped_run} is full (No space left on device)" in err and "free some space" in err
    assert snapshot(stopped_run) == before
    assert resume(stopped_run) == 0  # space freed: the run ends where it should
    assert_same_result(stopped_run, reference)


LIMITED = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from rnnkit.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_file_size_limit_is_one_line_and_leaves_out_as_it_was(stopped_run):
    limit = 20_000
    assert (stopped_run / "checkpoint.pt").stat().st_size > limit  # the next checkpoint cannot fit
    before = snapshot(stopped_run)
    res = subprocess.run([sys.executable, "-c", LIMITED, str(limit), "train", "--out", str(stopped_run),
                          "--resume"] + cli_options(), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 2, res.stderr[-2000:]
    assert one_line_error(res.stderr) and "file size limit" in res.stderr and "File too large" in res.stderr
    assert snapshot(stopped_run) == before

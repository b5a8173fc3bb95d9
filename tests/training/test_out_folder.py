"""--out: no write follows a link out of it, one run at a time holds it, and what a killed run left
half-written is cleared by the next run (which the dead run's lock does not block)."""
import os
import subprocess
import sys

from faults import cli_options, assert_same_result, one_line_error, snapshot

from rnnkit.cli.main import main
from rnnkit.training.outdir import OutFolder


def test_links_inside_out_are_replaced_never_written_through(stopped_run, tmp_path, quick_plots, reference):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text("someone else's")
    (outside / "loss.png").write_bytes(b"someone else's picture")
    (outside / "kept.txt").write_text("not a temporary")
    (outside / "checkpoint.pt").write_bytes((stopped_run / "checkpoint.pt").read_bytes())
    links = {"checkpoint.pt": outside / "checkpoint.pt", "metrics.json": outside / "metrics.json",
             "loss.png": outside / "loss.png", "attention.png": outside / "nowhere.png",
             ".checkpoint.pt.x1y2z3.tmp": outside / "kept.txt"}
    (stopped_run / "checkpoint.pt").unlink()
    for name, target in links.items():
        (stopped_run / name).symlink_to(target)
    before = snapshot(outside)

    assert main(["train", "--out", str(stopped_run), "--resume"] + cli_options()) == 0
    assert snapshot(outside) == before  # read through the link, never written through one
    for name in ("checkpoint.pt", "metrics.json", "loss.png", "attention.png"):
        assert not (stopped_run / name).is_symlink() and (stopped_run / name).is_file(), name
    assert not os.path.lexists(stopped_run / ".checkpoint.pt.x1y2z3.tmp")  # the link went, its target stayed
    assert_same_result(stopped_run, reference)


def test_an_out_that_is_itself_a_link_is_written(tmp_path, quick_plots):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    assert main(["train", "--out", str(link)] + cli_options(steps=2)) == 0
    assert (real / "checkpoint.pt").is_file() and (real / "metrics.json").is_file()


def test_a_second_run_in_a_held_out_is_refused_and_writes_nothing(stopped_run, tmp_path, capsys, quick_plots):
    fresh = tmp_path / "fresh"
    for out, resume in ((stopped_run, ["--resume"]), (fresh, [])):
        with OutFolder(out).claim():  # another live run holds it
            before = snapshot(out)
            assert main(["train", "--out", str(out)] + resume + cli_options(steps=2)) == 2
            err = capsys.readouterr().err
            assert one_line_error(err) and "in use by another rnnkit train run" in err
            assert snapshot(out) == before
    assert main(["train", "--out", str(fresh)] + cli_options(steps=2)) == 0  # once it is free


KILL_AT_SECOND_CHECKPOINT = """
import os, signal, sys
from rnnkit.cli.main import main
rename, saves = os.replace, []
def replace(src, dst):  # dies the way `kill -9` kills: its temporary written, not yet renamed
    if str(dst).endswith("checkpoint.pt"):
        saves.append(dst)
        if len(saves) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return rename(src, dst)
os.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_leaves_no_stale_lock_and_its_temporaries_are_cleared(tmp_path, quick_plots, reference):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # one thread, as the reference run
    res = subprocess.run([sys.executable, "-c", KILL_AT_SECOND_CHECKPOINT, "train", "--out", str(out)]
                         + cli_options(), capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == -9, res.stderr[-2000:]
    leftovers = list(out.glob(".checkpoint.pt.*.tmp"))
    assert leftovers  # the dead run's half-done save
    assert main(["train", "--out", str(out), "--resume"] + cli_options()) == 0  # the lock died with it
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    assert_same_result(out, reference)

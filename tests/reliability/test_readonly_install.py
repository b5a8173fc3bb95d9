"""A read-only install (issue 16, item 8): with the package folder and the home folder unwritable, the fused
kernels run, their numba cache and the generated kernels' libraries moved to the temporary folder, silently."""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import rnnkit

PACKAGE = Path(rnnkit.__file__).parent

RUN = textwrap.dedent("""
    import torch, rnnkit
    x = torch.randn(5, 2, 3, requires_grad=True)
    out, h = rnnkit.GRU(3, 4, backend="numba")(x)  # numba: its cache goes to the temporary folder
    out.sum().backward()
    print("ran", tuple(out.shape), tuple(x.grad.shape))
    from rnnkit.bench.user_cells import USER_CELLS  # a user's cell: its kernel generated, compiled, cached
    out, _ = rnnkit.Recurrent(USER_CELLS["mgu"][0], 3, 4, backend="generated")(x)
    out.sum().backward()
    print("generated", tuple(out.shape))
""")


def can_mount_read_only() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_read_only(), reason="needs a mount namespace (unshare -m) to make folders read-only")
def test_fused_kernels_run_from_a_read_only_install_without_a_writable_home(tmp_path):
    """Read-only for root as for anyone: a read-only bind mount of a copy of the package and of the home."""
    root = tmp_path / "install"
    shutil.copytree(PACKAGE, root / "rnnkit", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "home").mkdir()
    cache = Path(tempfile.gettempdir()) / f"rnnkit-numba-cache-{os.getuid()}"
    script = (f"mount --bind {root} {root} && mount -o remount,ro,bind {root} && "
              f"! touch {root}/probe 2>/dev/null && cd / && exec \"$0\" -c \"$1\"")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env.update(HOME=str(root / "home"), XDG_CACHE_HOME=str(root / "home" / ".cache"), PYTHONPATH=str(root))
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, sys.executable, RUN], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ran (5, 2, 4) (5, 2, 3)" in done.stdout and "generated (5, 2, 4)" in done.stdout
    assert "warn" not in done.stderr.lower() and "error" not in done.stderr.lower(), done.stderr
    assert cache.is_dir() and any(cache.rglob("*.nbi"))  # cached where it could be
    generated = Path(tempfile.gettempdir()) / f"rnnkit-generated-{os.getuid()}"
    assert generated.is_dir() and any(generated.glob("step_*.so"))


def test_cache_choice_falls_back_to_the_temporary_folder_then_to_none(monkeypatch, tmp_path):
    """The choice itself, branch by branch, whatever this machine's permissions."""
    from rnnkit.kernels.cpu import _jit
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(_jit.numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(_jit.tempfile, "gettempdir", lambda: str(tmp_path))
    writable = {"package": True, "home": True, "temp": True}

    def fake_writable(folder):
        if folder.startswith(str(tmp_path)):
            return writable["temp"]
        return writable["package"] if "__pycache__" in folder else writable["home"]

    monkeypatch.setattr(_jit, "writable", fake_writable)
    assert _jit._cache_available() and _jit.numba.config.CACHE_DIR == ""
    writable.update(package=False)
    assert _jit._cache_available() and _jit.numba.config.CACHE_DIR == ""  # numba's own user-wide folder
    writable.update(home=False)
    assert _jit._cache_available() and _jit.numba.config.CACHE_DIR.startswith(str(tmp_path))
    monkeypatch.setattr(_jit.numba.config, "CACHE_DIR", "")
    writable.update(temp=False)
    assert not _jit._cache_available()

"""--out as a run writes it: one run at a time, each file whole or as it was, no write through a link.

Every file goes to a hidden temporary beside its name (created with O_EXCL, so never through a
link) and is renamed over the name only when complete and on disk; rename replaces a symbolic
link itself, never its target, so no write leaves the folder.  A run holds an exclusive flock
on the folder itself for its whole life: the kernel drops it when the process dies, however it
dies, so a killed run leaves no stale lock, and taking it writes nothing into the folder.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None

TEMP_SUFFIX = ".tmp"
_BUFFER_BYTES = 1 << 20


class FolderBusy(Exception):
    """Another live process holds the folder's lock."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is in use by another rnnkit train run")
        self.path = path


class OutputError(Exception):
    """A file could not be written into the folder; that file is as it was before the write."""

    def __init__(self, folder: Path, name: str, error: OSError):
        self.folder, self.name, self.error = folder, name, error
        reason = error.strerror or str(error)
        if self.disk_full:
            text = f"the disk holding {folder} is full ({reason}) while writing {name}"
        elif error.errno == errno.EFBIG:
            text = f"writing {name} into {folder} went past the file size limit ({reason}; see `ulimit -f`)"
        else:
            text = f"cannot write {name} into {folder} ({reason})"
        super().__init__(text)

    @property
    def disk_full(self) -> bool:
        return self.error.errno in (errno.ENOSPC, errno.EDQUOT)


class _File:
    """Write-only, buffered, straight onto a file descriptor; keeps the OSError of a failed write,
    because torch.save reports it as a RuntimeError about inline_container.cc."""

    def __init__(self, fd: int):
        self.fd, self.buffer, self.error = fd, bytearray(), None

    def write(self, data) -> int:
        self.buffer += data
        if len(self.buffer) >= _BUFFER_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        try:
            while self.buffer:
                written = os.write(self.fd, self.buffer)
                del self.buffer[:written]
        except OSError as e:
            self.error = e
            raise

    def finish(self) -> None:
        """Everything written and on the disk (a full disk may only show at fsync or close)."""
        self.flush()
        try:
            os.fsync(self.fd)
            fd, self.fd = self.fd, -1
            os.close(fd)
        except OSError as e:
            self.error = e
            raise

    def abandon(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


class OutFolder:
    """The folder a run writes.  ``claim()`` takes its lock; writing works with or without it."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = None

    # -- one run at a time -------------------------------------------------------------
    def claim(self) -> "OutFolder":
        """Create the folder if needed and lock it; FolderBusy if another live run holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(self.path) from None
        except OSError:
            pass  # a file system without flock (some network mounts): run unlocked rather than not at all
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "OutFolder":
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    # -- what a killed run left ------------------------------------------------------------
    def leftovers(self, names: Iterable[str]) -> list:
        """Temporaries of ``names`` that no live run is writing (call it holding the lock)."""
        prefixes = tuple(f".{name}." for name in names)
        return sorted(p for p in self.path.iterdir()
                      if p.name.startswith(prefixes) and p.name.endswith(TEMP_SUFFIX)
                      and (p.is_symlink() or not p.is_dir()))  # a real folder of that name is not ours

    def remove_leftovers(self, names: Iterable[str]) -> list:
        removed = []
        for p in self.leftovers(names):
            try:
                p.unlink()  # a link is removed itself, its target is left alone
                removed.append(p.name)
            except FileNotFoundError:
                pass
        return removed

    # -- whole files -------------------------------------------------------------------------
    def stage(self, name: str, fill: Callable[[BinaryIO], None]) -> Path:
        """A complete, synced temporary for ``name``, filled by ``fill(file)``; ``commit`` puts it in place.

        On any failure the temporary is removed; a failed write raises OutputError.
        """
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=self.path)
        except OSError as e:
            raise OutputError(self.path, name, e) from None
        f = _File(fd)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the outputs from everyone else
            fill(f)
            f.finish()
        except BaseException as e:
            f.abandon()
            _unlink_quietly(tmp)
            if f.error is not None and not isinstance(e, KeyboardInterrupt):
                raise OutputError(self.path, name, f.error) from None
            raise
        return Path(tmp)

    def commit(self, staged: dict) -> None:
        """Rename every staged temporary over its name (``{name: temporary}``), in order."""
        pending = dict(staged)
        try:
            for name, tmp in staged.items():
                try:
                    os.replace(tmp, self.path / name)
                except OSError as e:
                    raise OutputError(self.path, name, e) from None
                del pending[name]
        finally:
            self.discard(pending)
        self._sync()

    def discard(self, staged: dict) -> None:
        for tmp in staged.values():
            _unlink_quietly(tmp)

    def write(self, name: str, fill: Callable[[BinaryIO], None]) -> None:
        """``stage`` and ``commit`` one file."""
        self.commit({name: self.stage(name, fill)})

    def _sync(self) -> None:
        """Put the renames themselves on the disk."""
        try:
            fd = self._fd if self._fd is not None else os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                if fd != self._fd:
                    os.close(fd)
        except OSError:
            pass  # some file systems cannot sync a folder; the files themselves are synced


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; set straight back
    os.umask(mask)
    return mask


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

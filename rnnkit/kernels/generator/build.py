"""Compiling generated C++ (emit_cpp.py) into a shared library, once per source and machine.

g++ builds the source with -O3 for this machine's CPU (-march=native: the library is built where it
runs; RNNKIT_GENERATED_MARCH overrides, e.g. "haswell" for AVX2 code on an AVX-512 machine) into a
cache keyed by a hash of the source, the flags and the CPU: a cell's kernels are compiled on its first
use on a machine, in about a second, and loaded from the cache afterwards.  The cache lives under the
user's cache folder ($XDG_CACHE_HOME or ~/.cache, rnnkit/generated), else a folder of this user's in the
temporary directory; where neither can be written, each process compiles into a temporary folder.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

from ...errors import UnsupportedBackendError
from ..._folders import writable
from ..._memo import memoized

# -fno-trapping-math: the branch-free selects (a clamp, exp's range) may then be vectorized: no code here reads
# floating-point exception flags.
FLAGS = ["-O3", "-shared", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-std=c++17"]


def _march() -> str:
    return os.environ.get("RNNKIT_GENERATED_MARCH", "native")


@memoized
def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return ""


@memoized
def cache_folder() -> str:
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (os.path.join(home, "rnnkit", "generated"),
                   os.path.join(tempfile.gettempdir(), f"rnnkit-generated-{os.getuid()}")):
        if writable(folder):
            return folder
    return tempfile.mkdtemp(prefix="rnnkit-generated-")


_LOADED: dict = {}  # hash -> the loaded library (kept alive: the loop calls into it)


def compiler() -> str:
    found = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not found:
        raise UnsupportedBackendError("generated kernels need a C++ compiler (g++); none was found on PATH")
    return found


def load(source: str) -> ctypes.CDLL:
    """The library built from ``source`` (compiled now unless in the cache)."""
    flags = FLAGS + [f"-march={_march()}"]
    key = hashlib.sha256("\0".join([source, " ".join(flags), _cpu_identity()]).encode()).hexdigest()[:24]
    if key in _LOADED:
        return _LOADED[key]
    folder = cache_folder()
    library = os.path.join(folder, f"step_{key}.so")
    if not os.path.exists(library):
        # this process's own source and library, renamed into place: another process may be compiling it too
        source_path = os.path.join(folder, f"step_{key}.{os.getpid()}.cpp")
        with open(source_path, "w") as f:
            f.write(source)
        partial = f"{library}.{os.getpid()}.tmp"
        result = subprocess.run([compiler(), *flags, source_path, "-o", partial], capture_output=True, text=True)
        if result.returncode != 0:
            raise UnsupportedBackendError(f"g++ could not compile a generated kernel ({source_path}): "
                                          f"{result.stderr[-2000:]}")
        os.replace(partial, library)
        os.replace(source_path, os.path.join(folder, f"step_{key}.cpp"))  # kept beside it, for reading
    _LOADED[key] = ctypes.CDLL(library)
    return _LOADED[key]


def step_addresses(source: str) -> tuple[int, int]:
    """The addresses of ``rnnkit_forward_step`` and ``rnnkit_backward_step`` in ``source``'s library."""
    library = load(source)
    return (ctypes.cast(library.rnnkit_forward_step, ctypes.c_void_p).value,
            ctypes.cast(library.rnnkit_backward_step, ctypes.c_void_p).value)


__all__ = ["load", "step_addresses", "cache_folder"]

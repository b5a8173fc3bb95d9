"""Builds rnnkit's C++ operators (``rnnkit._C``, from ``csrc/``) against the installed torch.

The package's metadata is in pyproject.toml; this file only adds the extension.  It must be built
against the torch it will run with, so install without build isolation, after torch:

    pip install torch==2.13.0 && pip install --no-build-isolation -e ".[test]" -c constraints.txt

An isolated build (plain ``pip install .``) gets no torch at build time: pyproject.toml
deliberately does not list torch as a build requirement, since pip would then fetch another
(multi-GB, CUDA) torch to build against.  Such a build installs the package without the
extension (with a warning here); rnnkit then runs as before and ``backend="ops"`` says how to build.
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

# ISA: AVX2 + FMA (+ F16C, which ATen's AVX2 vector header uses), which every machine this project runs
# on has (AMD EPYC, Intel Xeon): never -march=native, whose code may not run on the next machine.
# ATen's vector header picks its AVX2 implementation from CPU_CAPABILITY_AVX2, as in torch's own
# kernels; -fopenmp makes at::parallel_for use torch's OpenMP threads (without it it runs serially).
# -g0 overrides the -g of Python's own CFLAGS: debug information for torch's templates doubled each file's
# compile time (csrc/cpu/lstm_kernel.cpp: 57 s against 25 s on the AVX2 EPYC) and made the library 23 MB.
COMPILE_ARGS = ["-O3", "-g0", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-DCPU_CAPABILITY=AVX2",
                "-DCPU_CAPABILITY_AVX2", "-Wno-unused-parameter", "-Wno-unknown-pragmas"]
LINK_ARGS = ["-fopenmp"]


def extension_build() -> dict:
    """setup() arguments that build rnnkit._C, or none when torch is not importable here."""
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("rnnkit: torch is not importable in this build environment, so rnnkit._C (the C++ operators "
              "behind backend='ops') is not built. Build against your torch with: "
              "pip install --no-build-isolation -e .", file=sys.stderr)
        return {}
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(here, "csrc", "**", "*.cpp"),
                                                                    recursive=True))
    extension = CppExtension("rnnkit._C", sources, extra_compile_args={"cxx": COMPILE_ARGS},
                             extra_link_args=LINK_ARGS)
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(**extension_build())

"""The processor a measurement ran on, for the records beside its figures: machines of this project's kind
differ (AMD EPYC with or without AVX-512, Intel Xeon with it), and so do their figures."""
from __future__ import annotations

import platform
import subprocess


def cpu_name() -> str:
    """lscpu's model name and whether it has AVX-512, e.g. "AMD EPYC (no avx512f)"."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    name = fields.get("Model name", "unknown").strip()
    flags = fields.get("Flags", "").split()
    return f"{name} ({'avx512f' if 'avx512f' in flags else 'no avx512f'})"


__all__ = ["cpu_name"]

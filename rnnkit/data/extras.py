"""Packages that only some tasks need (the "tasks" extra), imported when a task asks for them."""
from __future__ import annotations

import importlib


class MissingExtra(ValueError):
    """A task's optional package is not installed; the message names the pip command."""


def require(module: str, package: str, task: str):
    """``module`` imported, or MissingExtra saying how to install ``package``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(f"task {task} reads data that {package} ships, and {package} is not installed: "
                           f"pip install -e \".[tasks]\" -c constraints.txt (from a clone; elsewhere: pip install "
                           f"\"rnnkit[tasks]\")") from None

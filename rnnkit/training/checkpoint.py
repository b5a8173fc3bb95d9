"""Checkpoints: written whole or not at all, loadable with torch.load(weights_only=True), checked on load.

A checkpoint is refused, with a CheckpointError that says why, when its bytes changed after it
was written (every part of torch's zip carries a CRC-32, which torch.load itself never checks),
when it is not a torch file, or when its contents are not the ones rnnkit train writes.
"""
from __future__ import annotations

import math
import zipfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.serialization

from .config import ConfigError, TrainConfig
from .outdir import OutFolder

FORMAT = "rnnkit-train-checkpoint"
VERSION = 1
NAME = "checkpoint.pt"

# What every checkpoint holds, and the type each entry must have.
CONTENTS = {"config": dict, "step": int, "model": dict, "optimizer": dict, "rng": torch.Tensor, "history": list,
            "seconds": (int, float), "vocab": dict}
# Optional "window": the training sums since the last log line (over all ranks), kept so that a
# resumed run logs what an uninterrupted one logs.
WINDOW = ("loss", "tokens", "correct")


class CheckpointError(Exception):
    """A checkpoint that cannot be used: missing, damaged, foreign, or from another configuration."""


# -- writing ------------------------------------------------------------------------------------

@contextmanager
def _with_crc32():
    """torch can be told to skip the CRC-32s; ours are always written, since load checks them."""
    get = getattr(torch.serialization, "get_crc32_options", None)
    if get is None or get():
        yield
        return
    torch.serialization.set_crc32_options(True)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(False)


def writer(payload: dict):
    """``fill(file)`` for OutFolder.stage: the payload with its format marker, as torch.save writes it."""
    def fill(f):
        with _with_crc32():
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
    return fill


def save(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` through a temporary and a rename: a crash never leaves half a file."""
    path = Path(path)
    OutFolder(path.parent).write(path.name, writer(payload))


# -- reading ------------------------------------------------------------------------------------

def load(path: Path) -> dict:
    """The payload at ``path``, checked for damage and for the contents rnnkit train writes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    unreadable = CheckpointError(f"{path} is not a readable torch checkpoint (corrupt, truncated, or another "
                                 "kind of file)")
    damaged = _damaged_part(path)
    if damaged is False:
        raise unreadable
    if damaged:
        raise CheckpointError(f"{path} is damaged: its part {damaged!r} fails the CRC-32 written with it, so its "
                              "bytes changed after it was saved; use an intact copy")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file fails in many ways (unpickling, zip, sizes, types)
        raise unreadable from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an rnnkit training checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is a version {payload.get('version')!r} checkpoint; this rnnkit reads "
                              f"version {VERSION}")
    _check_contents(path, payload)
    return payload


def _damaged_part(path: Path):
    """The name of the first zip part that fails its CRC-32 (or its header), None if every part is
    intact, False if the file is not a zip at all."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip()
    except Exception:  # zipfile reports damaged headers in many ways (sizes, names, offsets)
        return False


def _check_contents(path: Path, payload: dict) -> None:
    def broken(what: str):
        return CheckpointError(f"{path} is marked as an rnnkit checkpoint but its contents are not the ones "
                               f"rnnkit train writes: {what}")

    for key, kind in CONTENTS.items():
        value = payload.get(key)
        if key not in payload:
            raise broken(f"{key!r} is missing")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise broken(f"{key!r} should be {_kind_name(kind)}, found {type(value).__name__}")
    try:
        cfg = TrainConfig.from_dict(payload["config"])
        cfg.check()
    except (ConfigError, TypeError) as e:
        raise broken(f"its config: {e}") from None
    if not 0 <= payload["step"] <= cfg.steps:
        raise broken(f"step {payload['step']} is outside 0..{cfg.steps} (the run's --steps)")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["model"].items()):
        raise broken("'model' should map parameter names to tensors")
    if not isinstance(payload["optimizer"].get("state"), dict) \
            or not isinstance(payload["optimizer"].get("param_groups"), list):
        raise broken("'optimizer' should be an optimizer's state_dict")
    if payload["rng"].dtype != torch.uint8 or payload["rng"].dim() != 1:
        raise broken("'rng' should be torch.get_rng_state()'s 1-d uint8 tensor")
    if not all(isinstance(row, dict) and _whole(row.get("step")) and row["step"] <= payload["step"]
               and all(isinstance(k, str) and (v is None or _number(v)) for k, v in row.items())
               for row in payload["history"]):
        raise broken("'history' should be a list of rows of numbers, each with a step up to the checkpoint's")
    if not (math.isfinite(payload["seconds"]) and payload["seconds"] >= 0):
        raise broken(f"'seconds' should be a finite time, found {payload['seconds']!r}")
    window = payload.get("window")
    if window is not None and not (isinstance(window, dict) and all(_number(window.get(k)) for k in WINDOW)):
        raise broken(f"'window' should hold the sums {', '.join(WINDOW)}")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"dict": "a dict", "int": "an integer", "float": "a number", "list": "a list",
                        "Tensor": "a tensor"}.get(k.__name__, k.__name__) for k in kinds)


# -- into a model ---------------------------------------------------------------------------------

def check_weights(path, model: torch.nn.Module, weights: dict) -> None:
    """CheckpointError unless ``weights`` has exactly ``model``'s parameter names and shapes (``model``
    may live on the meta device, so nothing is allocated for a checkpoint that does not fit)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and expected[k] != found[k]]
    if missing or extra or wrong:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}" if extra
                else f"{wrong[0]!r} has shape {found[wrong[0]]}, the model's is {expected[wrong[0]]}")
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes ({what})")


def restore(path, state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Weights, optimizer and RNG from ``state`` (as load returns it), each checked to fit first."""
    check_weights(path, model, state["model"])
    model.load_state_dict(state["model"])
    fresh = [dict(g) for g in optimizer.state_dict()["param_groups"]]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: its optimizer state does not fit the model ({e})") from None
    for group, before in zip(optimizer.param_groups, fresh):
        for key, value in before.items():  # lr is set anew every step; the rest must be this run's
            if key not in ("lr", "params") and key in group and group[key] != value:
                raise CheckpointError(f"{path}: its optimizer setting {key}={group[key]!r} is not this run's "
                                      f"{value!r}")
    for p in model.parameters():
        for key, value in optimizer.state.get(p, {}).items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: its optimizer's {key} is a {type(value).__name__}, not a tensor")
            if value.dim() > 0 and value.shape != p.shape:
                raise CheckpointError(f"{path}: its optimizer's {key} has shape {tuple(value.shape)} for a "
                                      f"parameter of shape {tuple(p.shape)}")
    try:
        torch.set_rng_state(state["rng"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its RNG state cannot be restored ({str(e).splitlines()[0]})") from None

"""A damaged, foreign or doctored checkpoint: `rnnkit train --resume` and `rnnkit predict` refuse it with
one line and exit 2, and nothing in --out changes (bytes and mtimes compared)."""
import random
import zipfile

import pytest
import torch
from faults import cli_options, one_line_error, snapshot

from rnnkit.cli.main import main


def resume(out):
    return main(["train", "--out", str(out), "--resume"] + cli_options())


def predict(path):
    return main(["predict", "--checkpoint", str(path), "3 March 1998"])


def assert_refused(out, capsys, by_predict=True) -> str:
    """Both commands refuse out/checkpoint.pt; returns train's message."""
    before = snapshot(out)
    assert resume(out) == 2
    err = capsys.readouterr().err
    assert one_line_error(err), err
    assert snapshot(out) == before
    if by_predict:
        assert predict(out / "checkpoint.pt") == 2
        predict_err = capsys.readouterr().err
        assert one_line_error(predict_err), predict_err
    return err


def flip(data: bytearray, positions) -> bytearray:
    for i in positions:
        data[i] ^= 0xFF
    return data


def test_the_intact_checkpoint_is_accepted(stopped_run, capsys):
    assert predict(stopped_run / "checkpoint.pt") == 0
    assert capsys.readouterr().out.strip()


def test_64_flipped_bytes_in_a_tensor_are_caught(stopped_run, capsys):
    path = stopped_run / "checkpoint.pt"
    original = torch.load(path, weights_only=True)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        part = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor's bytes
    name_len, extra_len = (int.from_bytes(data[part.header_offset + k:part.header_offset + k + 2], "little")
                           for k in (26, 28))
    start = part.header_offset + 30 + name_len + extra_len + part.file_size // 2 - 32
    path.write_bytes(flip(data, range(start, start + 64)))
    # torch.load alone takes it, and hands back a changed tensor:
    doctored = torch.load(path, weights_only=True)
    changed = [k for k in original["model"] if not torch.equal(original["model"][k], doctored["model"][k])]
    changed += [k for k in ("rng",) if not torch.equal(original[k], doctored[k])]
    assert changed
    err = assert_refused(stopped_run, capsys)
    assert "is damaged" in err and "CRC-32" in err


@pytest.mark.parametrize("seed", range(4))
def test_64_bytes_flipped_anywhere_are_refused(stopped_run, capsys, seed):
    path = stopped_run / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    path.write_bytes(flip(data, random.Random(seed).sample(range(len(data)), 64)))
    err = assert_refused(stopped_run, capsys)
    assert "is damaged" in err or "not a readable torch checkpoint" in err


@pytest.mark.parametrize("content", [b"", b"step,loss\n1,2.5\n" * 40, "random", "half"])
def test_not_a_checkpoint_is_refused(stopped_run, capsys, content):
    path = stopped_run / "checkpoint.pt"
    if content == "random":
        content = random.Random(0).randbytes(4096)
    elif content == "half":
        data = path.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    assert "not a readable torch checkpoint" in assert_refused(stopped_run, capsys)


def doctor(state: dict, change: str) -> None:
    """Change one thing of a checkpoint's payload, as a hand-edit or another program might."""
    model, opt = state["model"], state["optimizer"]
    first = next(iter(model))
    if change == "no model":
        del state["model"]
    elif change == "weight of another shape":
        model[first] = model[first][:-1]
    elif change == "extra weight":
        model["extra.weight"] = torch.zeros(2)
    elif change == "weights of a bigger model":
        state["config"]["hidden"] = 32
    elif change == "hidden as text":
        state["config"]["hidden"] = "16"
    elif change == "negative hidden":
        state["config"]["hidden"] = -16
    elif change == "unknown cell":
        state["config"]["cell"] = "transformer"
    elif change == "huge seed":
        state["config"]["seed"] = 2**64
    elif change == "negative step":
        state["step"] = -1
    elif change == "step past the run":
        state["step"] = 99
    elif change == "step as text":
        state["step"] = "2"
    elif change == "rng as floats":
        state["rng"] = state["rng"].float()
    elif change == "history not a list":
        state["history"] = "none"
    elif change == "history row of text":
        state["history"][0]["loss"] = "low"
    elif change == "history past the checkpoint":
        state["history"][-1]["step"] = 99
    elif change == "seconds not finite":
        state["seconds"] = float("nan")
    elif change == "version 2":
        state["version"] = 2
    elif change == "no vocabulary":
        state["vocab"] = {}
    elif change == "short vocabulary":
        state["vocab"]["target"]["itos"] = state["vocab"]["target"]["itos"][:5]
    # what only a resumed run reads:
    elif change == "rng of another length":
        state["rng"] = state["rng"][:100]
    elif change == "moment of another shape":
        opt["state"][0]["exp_avg"] = opt["state"][0]["exp_avg"][:1]
    elif change == "moment as text":
        opt["state"][0]["exp_avg_sq"] = "x"
    elif change == "other betas":
        opt["param_groups"][0]["betas"] = (0.5, 0.5)
    elif change == "a parameter group too few":
        opt["param_groups"] = []
    elif change == "window as text":
        state["window"] = {"loss": "x", "tokens": 1, "correct": 1}
    else:
        raise AssertionError(change)


FOR_BOTH = ["no model", "weight of another shape", "extra weight", "weights of a bigger model", "hidden as text",
            "negative hidden", "unknown cell", "huge seed", "negative step", "step past the run", "step as text",
            "rng as floats", "history not a list", "history row of text", "history past the checkpoint",
            "seconds not finite", "version 2"]
FOR_PREDICT = ["no vocabulary", "short vocabulary"]
FOR_RESUME = ["rng of another length", "moment of another shape", "moment as text", "other betas",
              "a parameter group too few", "window as text"]


@pytest.mark.parametrize("change", FOR_BOTH + FOR_PREDICT + FOR_RESUME)
def test_right_marker_wrong_contents_is_refused(stopped_run, capsys, change):
    path = stopped_run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    doctor(state, change)
    torch.save(state, path)
    if change in FOR_PREDICT:  # a resumed run writes the vocabulary anew; predict reads it
        assert predict(path) == 2
        assert one_line_error(capsys.readouterr().err)
        return
    err = assert_refused(stopped_run, capsys, by_predict=change in FOR_BOTH)
    assert "Traceback" not in err and str(path) in err or "different configuration" in err

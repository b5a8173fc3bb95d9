"""Dynamic int8 quantization of an LSTM language model: rnnkit against torch, side by side.

The model of PyTorch's dynamic quantization tutorial (word language model): an embedding of 512
over a vocabulary of 33,278, a 5-layer LSTM of hidden size 256, a Linear decoder back to the
vocabulary, initialised as the tutorial does (uniform +-0.1 for the embedding and decoder).  Two
twins with the same float weights:

- rnnkit: ``rnnkit.LSTM`` + ``nn.Linear``, quantized with ``rnnkit.quantize_dynamic``;
- torch: ``torch.nn.LSTM`` + ``nn.Linear``, quantized with ``torch.ao.quantization.quantize_dynamic``
  ({nn.LSTM, nn.Linear}, qint8: the tutorial's call).

Each timed call is one whole-model forward of bptt = 25 steps (the tutorial's) at each batch
size, under ``torch.inference_mode()``.  The two quantized models are timed in one process,
interleaved call by call (the order alternating), and the median is reported; the float model
is timed after them, on its own (interleaved, its 34 MB decoder would evict the int8 models'
weights from the caches between their calls).
Error: the logits' relative error against the float model, ||q - f|| / ||f||, and the largest
absolute difference, over the same inputs, for both quantized models.

Run: ``python benchmarks/quantized_lm.py [--batch 1 20] [--repeats 60] [--threads N] [--product P]``.
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import time
import warnings

import torch
from torch import nn

import rnnkit
from rnnkit.quantization import quantize_dynamic
from rnnkit.quantization.layer_base import PRODUCTS

NTOKEN, NINP, NHID, NLAYERS, BPTT = 33278, 512, 256, 5, 25


class LanguageModel(nn.Module):
    """The tutorial's LSTMModel (dropout left out: it is inactive at inference)."""

    def __init__(self, recurrent_class):
        super().__init__()
        self.encoder = nn.Embedding(NTOKEN, NINP)
        self.rnn = recurrent_class(NINP, NHID, NLAYERS)
        self.decoder = nn.Linear(NHID, NTOKEN)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens, hidden):
        output, hidden = self.rnn(self.encoder(tokens), hidden)
        return self.decoder(output), hidden


def cpu_description() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()
        flags = set(re.search(r"Flags:\s*(.+)", lscpu).group(1).split())
    except (OSError, subprocess.CalledProcessError, AttributeError):
        return platform.processor() or "unknown CPU"
    has = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_vnni"))
    return f"{name} ({has})"


def build_models():
    torch.manual_seed(0)
    ours_float = LanguageModel(rnnkit.LSTM).eval()
    torch_float = LanguageModel(nn.LSTM).eval()
    torch_float.load_state_dict(ours_float.state_dict())  # the same float weights in both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.13's deprecation of torch.ao.quantization
        torch_int8 = torch.ao.quantization.quantize_dynamic(torch_float, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    ours_int8 = quantize_dynamic(ours_float)
    return ours_float, ours_int8, torch_int8


def errors(reference, result) -> tuple:
    return ((result - reference).norm() / reference.norm()).item(), (result - reference).abs().max().item()


def interleaved_medians(models: dict, args: tuple, repeats: int) -> dict:
    """Median milliseconds per call of each model, called in turn (the order alternating)."""
    names = list(models)
    times = {name: [] for name in names}
    for rep in range(repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            models[name](*args)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def bench(batch: int, repeats: int, models: dict) -> dict:
    torch.manual_seed(batch)
    tokens = torch.randint(NTOKEN, (BPTT, batch))
    hidden = (torch.zeros(NLAYERS, batch, NHID), torch.zeros(NLAYERS, batch, NHID))
    with torch.inference_mode():
        outputs = {name: model(tokens, hidden)[0] for name, model in models.items()}  # warm-up (numba compiles)
        int8 = {name: model for name, model in models.items() if name != "float"}
        result = interleaved_medians(int8, (tokens, hidden), repeats)
        result.update(interleaved_medians({"float": models["float"]}, (tokens, hidden), max(5, repeats // 4)))
    names = list(models)
    for name in names:
        if name != "float":
            result[name + " error"] = errors(outputs["float"], outputs[name])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--product", default="auto", choices=PRODUCTS,
                        help="the int8 layers' recurrent_product (rnnkit/quantization/layer_base.py: PRODUCTS)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ours_float, ours_int8, torch_int8 = build_models()
    for module in ours_int8.modules():
        if hasattr(module, "recurrent_product"):
            module.recurrent_product = args.product
    models = {"float": ours_float, "rnnkit int8": ours_int8, "torch int8": torch_int8}
    print(f"CPU: {cpu_description()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quantized engine "
          f"{torch.backends.quantized.engine}; rnnkit's products {args.product!r}; bptt {BPTT}, {args.repeats} "
          "interleaved calls per model")
    print(f"{'batch':>5} | {'float ms':>8} | {'rnnkit int8 ms':>14} | {'torch int8 ms':>13} | "
          f"{'torch/rnnkit':>12} | {'rnnkit rel. err':>15} | {'torch rel. err':>14} | {'rnnkit max':>10} | "
          f"{'torch max':>9}")
    for batch in args.batch:
        r = bench(batch, args.repeats, models)
        (ours_rel, ours_max), (torch_rel, torch_max) = r["rnnkit int8 error"], r["torch int8 error"]
        print(f"{batch:>5} | {r['float']:>8.2f} | {r['rnnkit int8']:>14.2f} | {r['torch int8']:>13.2f} | "
              f"{r['torch int8'] / r['rnnkit int8']:>12.2f} | {ours_rel:>15.2e} | {torch_rel:>14.2e} | "
              f"{ours_max:>10.2e} | {torch_max:>9.2e}")


if __name__ == "__main__":
    main()

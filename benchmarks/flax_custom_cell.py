"""Users' cells on rnnkit's generated kernels against the same cells in Flax under jax.jit (issue 18).

Each cell of rnnkit/bench/user_cells.py (a coupled input-forget gate LSTM, a minimal gated unit, a GRU
with layer norm on its candidate's recurrent part, torch.nn.GRUCell) runs through
``rnnkit.Recurrent(cell, backend="generated")`` and, written the same way in Flax, through
``flax.linen.RNN`` under ``jax.jit`` (XLA compiles the whole scan; its compilation is left out of the
times).  Forward, and forward+backward (the gradients of sum(outputs) with respect to the input and
every parameter), interleaved in one process, median of repeats, each sample about 20 ms of calls.  Ratio = Flax time / rnnkit time
(above 1: rnnkit faster).

JAX is not a dependency of rnnkit: run this in an environment that has both, e.g.

    python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install torch==2.13.0 jax flax -c constraints.txt
    /tmp/jaxenv/bin/pip install -r <(grep -iv '^torch' constraints.txt | grep -v '^#')
    PYTHONPATH=. /tmp/jaxenv/bin/python benchmarks/flax_custom_cell.py --threads 1 --json results/flax.json

``--threads 1`` gives torch one thread and XLA one (its Eigen thread pool off), as issue 18 measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from rnnkit.bench.machine import cpu_name


def _set_threads(threads: int) -> None:
    if threads == 1:  # before jax is imported
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()


SHAPES = [(100, 1, 32, 32), (200, 16, 64, 64), (100, 32, 256, 256)]  # T, B, I, H


def flax_cells():
    import flax.linen as nn
    import jax.numpy as jnp

    class Cell(nn.RNNCellBase):
        features: int
        arity: int = 1

        def initialize_carry(self, rng, input_shape):
            zeros = jnp.zeros(input_shape[:-1] + (self.features,))
            return (zeros, zeros) if self.arity == 2 else zeros

        @property
        def num_feature_axes(self) -> int:
            return 1

    class CIFGLSTM(Cell):
        arity: int = 2

        @nn.compact
        def __call__(self, carry, x):
            h, c = carry
            f, g, o = jnp.split(nn.Dense(3 * self.features)(x) + nn.Dense(3 * self.features, use_bias=False)(h), 3, -1)
            f = nn.sigmoid(f)
            c = f * c + (1 - f) * jnp.tanh(g)
            h = nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

    class MGU(Cell):
        @nn.compact
        def __call__(self, h, x):
            f = nn.sigmoid(nn.Dense(self.features)(x) + nn.Dense(self.features, use_bias=False)(h))
            n = jnp.tanh(nn.Dense(self.features)(x) + nn.Dense(self.features, use_bias=False)(f * h))
            h = (1 - f) * h + f * n
            return h, h

    class LayerNormCandidateGRU(Cell):
        @nn.compact
        def __call__(self, h, x):
            r_x, z_x, n_x = jnp.split(nn.Dense(3 * self.features)(x), 3, -1)
            r_h, z_h, n_h = jnp.split(nn.Dense(3 * self.features)(h), 3, -1)
            r, z = nn.sigmoid(r_x + r_h), nn.sigmoid(z_x + z_h)
            n = jnp.tanh(n_x + r * nn.LayerNorm()(n_h))
            h = (1 - z) * n + z * h
            return h, h

    class TorchGRU(Cell):  # torch.nn.GRUCell's equations (the reset gate on the recurrent product)
        @nn.compact
        def __call__(self, h, x):
            r_x, z_x, n_x = jnp.split(nn.Dense(3 * self.features)(x), 3, -1)
            r_h, z_h, n_h = jnp.split(nn.Dense(3 * self.features)(h), 3, -1)
            r, z = nn.sigmoid(r_x + r_h), nn.sigmoid(z_x + z_h)
            n = jnp.tanh(n_x + r * n_h)
            h = (1 - z) * n + z * h
            return h, h

    return {"cifg_lstm": CIFGLSTM, "mgu": MGU, "layernorm_candidate_gru": LayerNormCandidateGRU,
            "torch.nn.GRUCell": TorchGRU}


def measure(name: str, shape: tuple, repeats: int) -> list:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import torch

    import rnnkit
    from rnnkit.bench.timing import time_pair
    from rnnkit.bench.user_cells import USER_CELLS

    T, B, I, H = shape
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(USER_CELLS[name][0], I, H, backend="generated")
    x = torch.randn(T, B, I)

    def rnnkit_forward():
        with torch.no_grad():
            layer(x)

    def rnnkit_training():
        xx = x.detach().requires_grad_(True)
        layer(xx)[0].sum().backward()
        layer.zero_grad(set_to_none=False)

    model = nn.RNN(flax_cells()[name](H))
    xj = jnp.asarray(x.transpose(0, 1).numpy())  # (B, T, I): Flax's batch-major layout
    params = model.init(jax.random.PRNGKey(0), xj)
    apply = jax.jit(model.apply)
    grad = jax.jit(jax.grad(lambda p, xs: model.apply(p, xs).sum(), argnums=(0, 1)))

    def flax_forward():
        jax.block_until_ready(apply(params, xj))

    def flax_training():
        jax.block_until_ready(grad(params, xj))

    rows = []
    for pass_, ours, theirs in (("fwd", rnnkit_forward, flax_forward), ("fwd+bwd", rnnkit_training, flax_training)):
        t_flax, t_rnnkit = time_pair(theirs, ours, repeats=repeats, warmup=3, min_time=0.02)
        rows.append({"cell": name, "shape": list(shape), "pass": pass_, "flax_ms": t_flax * 1e3,
                     "rnnkit_ms": t_rnnkit * 1e3, "ratio": t_flax / t_rnnkit})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch's and XLA's threads (1: one each)")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        _set_threads(args.threads)
    try:
        import flax  # noqa: F401
        import jax
    except ImportError:
        print("this benchmark needs jax and flax (not rnnkit dependencies): see its docstring", file=sys.stderr)
        return 2
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in flax_cells():
        for shape in SHAPES:
            for row in measure(name, shape, args.repeats):
                rows.append(row)
                print(f"{row['cell']:<24} T,B,I,H={','.join(map(str, row['shape'])):<14} {row['pass']:<8} "
                      f"flax {row['flax_ms']:9.3f} ms  rnnkit {row['rnnkit_ms']:9.3f} ms  ratio {row['ratio']:5.2f}",
                      flush=True)
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "jax": jax.__version__,
              "processor": cpu_name(), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run by test_state_copies.py: two CPU processes (gloo) train a model of rnnkit layers under
DistributedDataParallel with find_unused_parameters=False, and check that every rank ends with the
same parameters, equal to one process training on the whole batch.  Prints OK on success.

In float64: the ranks' gradients are sums over half the batch, all-reduced, the single process's one
sum over it, and the two round differently; float64 leaves ~1e-16 of that (3 SGD steps of lr 0.1 on
values of order 1), so the comparison's 1e-10 holds on every machine (in float32 a fixed tolerance held
only by the luck of the machine's rounding)."""
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rnnkit

STEPS = 3


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = rnnkit.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True, proj_size=2, dropout=0.2)
        self.gru = rnnkit.GRU(4, 4, batch_first=True)
        self.cell = rnnkit.Recurrent(rnnkit.GRUCell, 4, 3, batch_first=True)
        self.head = torch.nn.Linear(3, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        y, _ = self.cell(y)
        return self.head(y[:, -1])


def data():
    gen = torch.Generator().manual_seed(7)
    return (torch.randn(4, 6, 3, generator=gen, dtype=torch.float64),
            torch.randn(4, 1, generator=gen, dtype=torch.float64))


def train(model, x, y, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def worker(rank, world, init_file, result_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = Model().double().eval()  # eval: dropout off, so ranks and the single process compute the same function
    ddp = torch.nn.parallel.DistributedDataParallel(model)  # find_unused_parameters=False (the default)
    x, y = data()
    shard = slice(rank * 2, rank * 2 + 2)
    train(ddp, x[shard], y[shard], STEPS)
    torch.save([p.detach() for p in model.parameters()], os.path.join(result_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(2)]
    torch.manual_seed(0)
    single = Model().double().eval()
    x, y = data()
    train(single, x, y, STEPS)  # mean loss over the whole batch = the mean of the ranks' gradients
    for a, b, c in zip(ranks[0], ranks[1], single.parameters()):
        assert torch.equal(a, b), "ranks diverged"
        assert a.dtype == torch.float64 and (a - c.detach()).abs().max() <= 1e-10, (a - c.detach()).abs().max()
    torch.manual_seed(0)
    initial = Model().double()
    assert all(not torch.equal(p0, p.detach()) for p0, p in zip(ranks[0], initial.parameters())), "no training happened"
    print("OK")


if __name__ == "__main__":
    sys.exit(main())

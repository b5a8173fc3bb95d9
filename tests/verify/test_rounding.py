"""rnnkit.verify.rounding: the rounding noise does what the bounds built on it assume, and the one
private torch API it reaches for (torch.utils._python_dispatch.TorchDispatchMode) is still there."""
import torch

from rnnkit.verify import rounding


def test_the_dispatch_mode_it_relies_on_exists():
    from torch.utils._python_dispatch import TorchDispatchMode
    assert issubclass(rounding.RoundingNoise, TorchDispatchMode)


def _noisy(fn, *args, u=2.0 ** -24, seed=0):
    with rounding.RoundingNoise(u, torch.Generator().manual_seed(seed)):
        return fn(*args)


def test_every_computed_value_moves_by_at_most_u_relative():
    x, y = torch.rand(1000, dtype=torch.float64) + 1, torch.rand(1000, dtype=torch.float64) + 1
    u = 2.0 ** -24
    for fn in (torch.mul, torch.add, lambda a, b: torch.tanh(a) * b):
        exact, moved = fn(x, y), _noisy(fn, x, y)
        relative = ((moved - exact) / exact).abs()
        assert 0 < relative.max() <= 2.5 * u  # tanh then mul: two roundings
    product = _noisy(torch.mm, x.view(10, 100), y.view(100, 10))
    assert not torch.equal(product, x.view(10, 100) @ y.view(100, 10))


def test_views_and_copies_pass_unchanged_and_in_place_math_is_rounded():
    x = torch.rand(100, dtype=torch.float64) + 1
    assert torch.equal(_noisy(lambda t: t.view(10, 10).t(), x), x.view(10, 10).t())
    target = torch.empty_like(x)
    _noisy(target.copy_, x)
    assert torch.equal(target, x)
    inplace = x.clone()
    _noisy(inplace.tanh_)
    assert not torch.equal(inplace, x.tanh()) and ((inplace - x.tanh()).abs() <= 2.0 ** -23).all()


def test_sensitivity_and_bound_scale_with_the_dtype():
    data = [torch.rand(50, dtype=torch.float64) + 1, torch.rand(50, dtype=torch.float64) + 1]
    truth, (s32,) = rounding.rounding_sensitivity(lambda d: [(d[0] * d[1]).sum().reshape(1)], data)
    assert torch.allclose(truth[0], (data[0] * data[1]).sum())
    # sum of 50 products near 2: each moved by a few u, the spread a few u x the result
    assert 2.0 ** -24 * truth[0].item() <= s32 <= 200 * 2.0 ** -24 * truth[0].item()
    _, (s16,) = rounding.rounding_sensitivity(lambda d: [(d[0] * d[1]).sum().reshape(1)], data,
                                              dtype=torch.bfloat16)
    assert 0.1 * s32 < s16 < 10 * s32  # returned in float32's units
    assert rounding.rounding_bound(1.0, torch.float64) == rounding.ROUNDING_FACTOR * 2.0 ** -29
    assert rounding.rounding_bound(1.0, torch.bfloat16) == rounding.LOW_PRECISION_ROUNDING_FACTOR * 2.0 ** 16

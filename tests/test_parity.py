"""rnnkit layers equal torch.nn: outputs, final states and every gradient, over the whole option grid."""
import itertools

import pytest
import torch

from helpers import MODES, TOL, assert_within_rounding, float64_truth, make_hx, make_input, max_diff, run_and_grad, twins

FORMS = ["batched", "unbatched", "packed_sorted", "packed_unsorted"]
GRID = list(itertools.product(
    MODES, [1, 2, 3], [False, True], [False, True], [True, False], FORMS, [False, True],
))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "mode,num_layers,bidirectional,batch_first,bias,form,with_hx", GRID,
    ids=[f"{m}-L{n}-{'bi' if b else 'uni'}-{'bf' if f else 'tf'}-{'bias' if s else 'nobias'}-{fo}-{'hx' if h else 'nohx'}"
         for m, n, b, f, s, fo, h in GRID],
)
def test_parity(mode, num_layers, bidirectional, batch_first, bias, form, with_hx, dtype):
    ours, ref = twins(mode, dtype, num_layers=num_layers, bidirectional=bidirectional,
                      batch_first=batch_first, bias=bias)
    gen = torch.Generator().manual_seed(7)
    inp, leaf = make_input(ours, form, dtype, gen)
    hx = make_hx(ours, form, dtype, gen) if with_hx else None
    ours_out, ours_grads = run_and_grad(ours, inp, leaf, hx)
    ref_out, ref_grads = run_and_grad(ref, inp, leaf, hx)
    if dtype == torch.float64:  # two float64 implementations agree to ~1e-15 of these magnitudes
        assert max_diff(ours_out, ref_out) <= TOL[dtype]
        assert max_diff(ours_grads, ref_grads) <= TOL[dtype]
        return
    # float32: each implementation within float32's rounding of the float64 truth (helpers: the bound
    # is derived from the computation's sensitivity to rounding, not fitted to one machine's rounding)
    truth, sensitivities = float64_truth(ref, form, leaf, hx)
    assert_within_rounding(ours_out + ours_grads, truth, sensitivities, dtype, who="rnnkit")
    assert_within_rounding(ref_out + ref_grads, truth, sensitivities, dtype, who="torch.nn float32")

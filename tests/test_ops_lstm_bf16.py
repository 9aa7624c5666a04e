"""seqtrain.ops.lstm(bf16=True): the AMX kernel against a float32 emulation of its rounding, and against the
float32 kernel (the numeric difference that the README states). Skips where the CPU has no AMX."""

import pytest
import torch

from seqtrain import ops
from seqtrain.ops.lstm import lstm_bf16_available
from tests.ops_helpers import need, poison  # noqa: F401  (poison: autouse fixture)


def need_bf16():
    need("native")
    if not lstm_bf16_available(torch.zeros(1), 16):
        pytest.skip(
            "no bf16 LSTM here: needs a CPU with AMX (e.g. Intel Sapphire Rapids) and the avx512-amx build"
        )


def emulated(x, w_ih, w_hh, bias, lens, direction, h0, c0):
    """The kernel's arithmetic in float32 (GEMM operands rounded to bf16): the reference with bf16=True."""
    return ops.lstm(x, w_ih, w_hh, bias, lens, direction=direction, h0=h0, c0=c0, impl="reference", bf16=True)


def make(seed, T, B, n_in, H):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, n_in, generator=gen)
    lens = torch.randint(0, T + 1, (B,), generator=gen)
    lens[0] = T
    scale = H**-0.5
    weights = [
        torch.randn(4 * H, n_in, generator=gen) * scale,
        torch.randn(4 * H, H, generator=gen) * scale * 2,
        torch.randn(4 * H, generator=gen) * 0.1,
    ]
    state = [torch.randn(B, H, generator=gen) * 0.5 for _ in range(2)]
    return x, lens, weights, state


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# (T, B, in, H): B below 16, between 16 and 32 (partial row tiles), 32 (full tiles) and 1; H = 48 leaves an
# odd number of 16-unit tiles per gate, in = 9, 40 a partial K block.
SHAPES = [(7, 5, 9, 32), (20, 37, 16, 48), (30, 32, 40, 64), (11, 1, 8, 16)]


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}in{}H{}".format(*s))
def test_bf16_forward_matches_its_float32_emulation(shape, direction):
    need_bf16()
    x, lens, (w_ih, w_hh, bias), (h0, c0) = make(0, *shape)
    y, (h, c) = ops.lstm(x, w_ih, w_hh, bias, lens, direction=direction, h0=h0, c0=c0, bf16=True)
    ye, (he, ce) = emulated(x, w_ih, w_hh, bias, lens, direction, h0, c0)
    # Equal up to float32 summation order, which can flip a bf16 rounding of h now and then (one bf16 ulp of
    # one unit, 0.4%), hence 1e-2 and not 1e-6; a wrong index or a missing tile is off by O(1).
    for name, a, b in [("y", y, ye), ("h_n", h, he), ("c_n", c, ce)]:
        assert not torch.isnan(a).any(), f"{name}: NaN (unwritten element?)"
        assert rel(a, b) < 1e-2, f"{name}: {rel(a, b):.2e}"
    assert (y[lens[None, :].expand(shape[0], -1) <= torch.arange(shape[0])[:, None]] == 0).all()


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("shape", SHAPES[1:3], ids=lambda s: "T{}B{}in{}H{}".format(*s))
def test_bf16_outputs_and_gradients_are_within_bf16_rounding_of_float32(shape, direction):
    need_bf16()
    x, lens, weights, state = make(1, *shape)
    grads = {}
    for bf16 in (False, True):
        inputs = [t.clone().requires_grad_() for t in (x, *weights, *state)]
        x_, w_ih, w_hh, bias, h0, c0 = inputs
        y, (h, c) = ops.lstm(x_, w_ih, w_hh, bias, lens, direction=direction, h0=h0, c0=c0, bf16=bf16)
        gen = torch.Generator().manual_seed(2)
        loss = sum((torch.randn(t.shape, generator=gen) * t).sum() for t in (y, h, c))
        grads[bf16] = [y, h, c, *torch.autograd.grad(loss, inputs)]
    names = ["y", "h_n", "c_n", "dx", "dW_ih", "dW_hh", "dbias", "dh0", "dc0"]
    for name, a, b in zip(names, grads[True], grads[False]):
        assert 1e-4 < rel(a, b) < 5e-2, f"{name}: bf16 vs float32 {rel(a, b):.2e}"


def test_bf16_refuses_what_it_cannot_run():
    need_bf16()
    x, lens, (w_ih, w_hh, bias), _ = make(0, 5, 3, 4, 6)  # H = 6: not a multiple of 16
    with pytest.raises(RuntimeError, match="multiple of 16"):
        ops.lstm(x, w_ih, w_hh, bias, lens, bf16=True)
    assert not ops.lstm_bf16_available(x.double(), 16)


def test_reference_bf16_rounds_only_the_matrix_product_operands():
    x, lens, (w_ih, w_hh, bias), (h0, c0) = make(3, 4, 2, 3, 2)
    y, (h, c) = ops.lstm(x, w_ih, w_hh, bias, lens, h0=h0, c0=c0, impl="reference", bf16=True)
    r = lambda t: t.bfloat16().float()  # noqa: E731
    a_i, a_f, a_g, a_o = (r(x[0]) @ r(w_ih).T + bias + r(h0) @ r(w_hh).T).chunk(4, 1)  # by hand, frame 0
    c1 = torch.sigmoid(a_f) * c0 + torch.sigmoid(a_i) * torch.tanh(a_g)
    expected = torch.sigmoid(a_o) * torch.tanh(c1)
    torch.testing.assert_close(y[0], torch.where(lens[:, None] > 0, expected, torch.zeros_like(expected)))
    float32 = ops.lstm(x, w_ih, w_hh, bias, lens, h0=h0, c0=c0, impl="reference")[0]
    assert not torch.equal(y, float32)

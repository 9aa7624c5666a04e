"""seqtrain.ops.lstm (native and reference) against torch.nn.LSTM run per sequence, and float64 gradcheck."""

import copy

import pytest
import torch

from seqtrain import ops
from tests.ops_helpers import IMPLS, need, poison  # noqa: F401  (poison: autouse fixture)


def make_case(seed, T=9, B=4, n_in=5, H=6, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    module = torch.nn.LSTM(n_in, H).to(dtype)
    x = torch.randn(T, B, n_in, generator=gen, dtype=dtype)
    lens = torch.randint(1, T + 1, (B,), generator=gen)
    lens[0] = T  # at least one full-length sequence, so T is really used
    h0, c0 = torch.randn(2, B, H, generator=gen, dtype=dtype)
    return module.to(device), x.to(device), lens, h0.to(device), c0.to(device)


def params(module):
    return module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0 + module.bias_hh_l0


def torch_lstm(module, x, lens, direction, h0, c0):
    """torch.nn.LSTM on each unpadded sequence (reversed for direction -1), padded back with zeros."""
    y, h_n, c_n = torch.zeros(x.shape[:2] + (module.hidden_size,), dtype=x.dtype, device=x.device), [], []
    for b, n in enumerate(lens.tolist()):
        seq = x[:n, b : b + 1]
        seq = seq.flip(0) if direction < 0 else seq
        out, (h, c) = module(seq, (h0[None, b : b + 1], c0[None, b : b + 1]))
        y[:n, b] = (out.flip(0) if direction < 0 else out)[:, 0]
        h_n.append(h[0, 0])
        c_n.append(c[0, 0])
    return y, (torch.stack(h_n), torch.stack(c_n))


def outputs_and_grads(run, inputs, seed):
    """Forward outputs, and gradients of a random projection of all three outputs w.r.t. inputs."""
    y, (h, c) = run()
    gen = torch.Generator().manual_seed(seed + 1)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in (y, h, c)]
    loss = sum((w * t).sum() for w, t in zip(weights, (y, h, c)))
    return [y, h, c], torch.autograd.grad(loss, inputs)


def assert_close(ours, theirs, what):
    for name, a, b in zip(["y", "h_n", "c_n"] if len(ours) == 3 else what, ours, theirs):
        assert not torch.isnan(a).any(), f"{name}: NaN (unwritten element?)"
        rel = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
        assert rel < 1e-5, f"{name}: relative error {rel:.2e}"


# (B, H): H = 6 runs the generic per-step loop; multiples of the panel width (16 with AVX2, 32 with AVX-512)
# the fused CPU loop: with gemm_simd.h in uneven row tiles (13 = 7 + 6, 25 = 9 + 8 + 8) and a single row; with
# AVX-512 and a batch that nearly fills its vectors with gemm_bcast.h (16; 31 of 32 lanes; 47 = 32 + 15) and
# unit ranges that end in short tiles (H = 64: 32 units a thread, 28 + 4 at B = 16; H = 96: 64 and 32 units in
# tiles of 14).
SHAPES = [(4, 6), (13, 32), (10, 48), (25, 64), (1, 32), (16, 64), (31, 96), (47, 32)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"B{s[0]}H{s[1]}")
def test_matches_torch_lstm(impl, direction, seed, shape):
    need(impl)
    module, x, lens, h0, c0 = make_case(seed, B=shape[0], H=shape[1])
    x.requires_grad_(True)
    h0.requires_grad_(True)
    c0.requires_grad_(True)
    inputs = [x, module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, h0, c0]
    ours = outputs_and_grads(
        lambda: ops.lstm(x, *params(module), lens, direction=direction, h0=h0, c0=c0, impl=impl), inputs, seed
    )
    theirs = outputs_and_grads(lambda: torch_lstm(module, x, lens, direction, h0, c0), inputs, seed)
    assert_close(ours[0], theirs[0], None)
    assert_close(ours[1], theirs[1], ["dx", "dW_ih", "dW_hh", "dbias", "dh0", "dc0"])


@pytest.mark.parametrize("shape", [(4, 6), (13, 32)], ids=lambda s: f"B{s[0]}H{s[1]}")
def test_input_without_grad_skips_dx_and_keeps_the_weight_gradients(shape):
    """A first layer's input (the data) needs no gradient: the kernel then leaves out the dx GEMM."""
    need("native")
    module, x, lens, h0, c0 = make_case(7, B=shape[0], H=shape[1])
    weights = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0]
    ours = outputs_and_grads(
        lambda: ops.lstm(x, *params(module), lens, h0=h0, c0=c0, impl="native"), weights, 7
    )
    theirs = outputs_and_grads(lambda: torch_lstm(module, x, lens, 1, h0, c0), weights, 7)
    assert_close(ours[1], theirs[1], ["dW_ih", "dW_hh", "dbias"])


@pytest.mark.parametrize("direction", [1, -1])
def test_padded_output_is_zero_and_zero_length_keeps_initial_state(direction):
    need("native")
    module, x, lens, h0, c0 = make_case(3)
    lens[1] = 0
    y, (h, c) = ops.lstm(x, *params(module), lens, direction=direction, h0=h0, c0=c0, impl="native")
    for b, n in enumerate(lens.tolist()):
        assert (y[n:, b] == 0).all()
    assert torch.equal(h[1], h0[1]) and torch.equal(c[1], c0[1])


@pytest.mark.parametrize("direction", [1, -1])
def test_gradcheck_float64(direction):
    need("native")
    module, x, lens, h0, c0 = make_case(4, T=5, B=3, n_in=3, H=2, dtype=torch.float64)
    w_ih, w_hh, bias = (p.detach().clone().requires_grad_(True) for p in params(module))
    inputs = [t.detach().clone().requires_grad_(True) for t in (x, h0, c0)]

    def run(x, w_ih, w_hh, bias, h0, c0):
        y, (h, c) = ops.lstm(x, w_ih, w_hh, bias, lens, direction=direction, h0=h0, c0=c0, impl="native")
        return y, h, c

    assert torch.autograd.gradcheck(run, (inputs[0], w_ih, w_hh, bias, inputs[1], inputs[2]))


def test_native_equals_reference_without_initial_state():
    need("native")
    module, x, lens, _, _ = make_case(5, dtype=torch.float64)
    y1, (h1, c1) = ops.lstm(x, *params(module), lens, direction=-1, impl="native")
    y2, (h2, c2) = ops.lstm(x, *params(module), lens, direction=-1, impl="reference")
    for a, b in [(y1, y2), (h1, h2), (c1, c2)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("direction", [1, -1])
def test_cuda_matches_cpu_reference(direction):
    need("native", "cuda")
    module, x, lens, h0, c0 = make_case(6)
    inputs_cpu = [t.clone().requires_grad_(True) for t in (x, h0, c0)]
    inputs_gpu = [t.detach().cuda().requires_grad_(True) for t in inputs_cpu]
    gpu = copy.deepcopy(module).cuda()
    ours = outputs_and_grads(
        lambda: ops.lstm(
            inputs_gpu[0],
            *params(gpu),
            lens,
            direction=direction,
            h0=inputs_gpu[1],
            c0=inputs_gpu[2],
            impl="native",
        ),
        inputs_gpu + [gpu.weight_hh_l0],
        7,
    )
    theirs = outputs_and_grads(
        lambda: ops.lstm(
            inputs_cpu[0],
            *params(module),
            lens,
            direction=direction,
            h0=inputs_cpu[1],
            c0=inputs_cpu[2],
            impl="reference",
        ),
        inputs_cpu + [module.weight_hh_l0],
        7,
    )
    assert_close([t.cpu() for t in ours[0]], theirs[0], None)
    assert_close([t.cpu() for t in ours[1]], theirs[1], ["dx", "dh0", "dc0", "dW_hh"])


def test_bad_weight_shape_names_it():
    module, x, lens, _, _ = make_case(8)
    w_ih, w_hh, bias = params(module)
    with pytest.raises(ValueError, match="weight_ih must be"):
        ops.lstm(x, w_ih.t(), w_hh, bias, lens, impl="reference")


@pytest.fixture
def two_threads():
    """lstm_group runs its calls concurrently only with 1 < threads <= calls."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(4, 6), (13, 32)], ids=lambda s: f"B{s[0]}H{s[1]}")
def test_group_runs_both_directions_concurrently_with_the_results_of_each_alone(shape, two_threads):
    need("native")
    fw, x, lens, h0, c0 = make_case(11, B=shape[0], H=shape[1])
    bw = make_case(12, B=shape[0], H=shape[1])[0]
    x_bw = x.clone()  # the backward direction reads no gradient-needing input: its dx is left out
    x.requires_grad_(True)
    h0.requires_grad_(True)
    assert ops.group_runs_concurrently(2, x)
    calls = [
        ops.LstmCall(x, *params(fw), 1, h0, c0),
        ops.LstmCall(x_bw, *params(bw), -1),
    ]
    inputs = [x, h0, fw.weight_ih_l0, fw.weight_hh_l0, fw.bias_ih_l0, bw.weight_ih_l0, bw.weight_hh_l0]
    zeros = torch.zeros_like(h0)

    def both(run):
        """The outputs of both calls, and the gradients of a random projection of all of them."""
        results = run()
        outs = [t for y, (h, c) in results for t in (y, h, c)]
        gen = torch.Generator().manual_seed(5)
        loss = sum((torch.randn(t.shape, generator=gen) * t).sum() for t in outs)
        return outs, torch.autograd.grad(loss, inputs)

    ours = both(lambda: ops.lstm_group(calls, lens))
    theirs = both(lambda: [torch_lstm(fw, x, lens, 1, h0, c0), torch_lstm(bw, x_bw, lens, -1, zeros, zeros)])
    outputs = ["fw y", "fw h_n", "fw c_n", "bw y", "bw h_n", "bw c_n"]
    assert_close(ours[0], theirs[0], outputs)
    grads = ["dx", "dh0", "fw dW_ih", "fw dW_hh", "fw dbias", "bw dW_ih", "bw dW_hh"]
    assert_close(ours[1], theirs[1], grads)


def test_group_error_in_a_concurrent_call_is_raised(two_threads):
    need("native")
    from seqtrain.ops import build

    module, x, lens, h0, c0 = make_case(1)
    w_ih, w_hh, bias = params(module)
    bad = w_ih[:, :-1].contiguous()
    with pytest.raises(RuntimeError, match="weight_ih must be"):
        build.native_module().lstm_forward_group(
            [x, x],
            [w_ih, bad],
            [w_hh, w_hh],
            [bias, bias],
            [h0, h0],
            [c0, c0],
            [lens, lens],
            [1, -1],
            False,
            False,
        )

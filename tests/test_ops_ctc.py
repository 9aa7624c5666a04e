"""seqtrain.ops.ctc_loss (native and reference) against torch.nn.functional.ctc_loss over log_softmax."""

import pytest
import torch
import torch.nn.functional as F

from seqtrain import ops
from tests.ops_helpers import IMPLS, need, poison  # noqa: F401  (poison: autouse fixture)


def make_case(seed, T=12, B=5, C=6, S=4, blank=0, dtype=torch.float32):
    """Random logits and feasible padded targets (T >= 2S, so repeats always fit)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, B, C, generator=gen, dtype=dtype)
    labels = [c for c in range(C) if c != blank]
    targets = torch.tensor(labels)[torch.randint(len(labels), (B, S), generator=gen)]
    target_lengths = torch.randint(0, S + 1, (B,), generator=gen)
    input_lengths = torch.randint(2 * S, T + 1, (B,), generator=gen)
    input_lengths[0], target_lengths[0] = T, S
    return logits, targets, input_lengths, target_lengths


def loss_and_grad(fn, logits, *args, **kwargs):
    logits = logits.detach().clone().requires_grad_(True)
    loss = fn(logits, *args, **kwargs)
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    (grad,) = torch.autograd.grad((loss * weights).sum(), logits)
    return loss.detach(), grad


def torch_ctc(logits, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    return F.ctc_loss(
        logits.log_softmax(-1),
        targets,
        input_lengths,
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )


def ours(impl):
    return lambda *args, **kwargs: ops.ctc_loss(*args, impl=impl, **kwargs)


def assert_rel(a, b, what, tol=1e-5):
    assert not torch.isnan(a).any(), f"{what}: NaN (unwritten element?)"
    rel = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
    assert rel < tol, f"{what}: relative error {rel:.2e}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_torch(impl, reduction, seed):
    need(impl)
    case = make_case(seed)
    loss, grad = loss_and_grad(ours(impl), *case, reduction=reduction)
    loss_t, grad_t = loss_and_grad(torch_ctc, *case, reduction=reduction)
    assert_rel(loss, loss_t, "loss")
    assert_rel(grad, grad_t, "grad")


@pytest.mark.parametrize("impl", IMPLS)
def test_blank_last_and_int32_targets(impl):
    need(impl)
    logits, targets, input_lengths, target_lengths = make_case(2, blank=5)
    case = (logits, targets.int(), input_lengths, target_lengths)
    loss, grad = loss_and_grad(ours(impl), *case, blank=5, reduction="none")
    loss_t, grad_t = loss_and_grad(torch_ctc, *case, blank=5, reduction="none")
    assert_rel(loss, loss_t, "loss")
    assert_rel(grad, grad_t, "grad")


@pytest.mark.parametrize("impl", IMPLS)
def test_edge_cases(impl):
    """Empty target, repeated labels (need a blank between), one-frame input, input just long enough."""
    need(impl)
    logits = torch.randn(6, 5, 4)
    targets = torch.tensor([[0, 0, 0], [2, 2, 2], [3, 0, 0], [1, 2, 1], [1, 1, 0]]).clamp_min(1)
    input_lengths = torch.tensor([6, 6, 1, 3, 3])
    target_lengths = torch.tensor([0, 3, 1, 3, 2])
    case = (logits, targets, input_lengths, target_lengths)
    loss, grad = loss_and_grad(ours(impl), *case, reduction="none")
    loss_t, grad_t = loss_and_grad(torch_ctc, *case, reduction="none")
    assert_rel(loss, loss_t, "loss")
    assert_rel(grad, grad_t, "grad")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_impossible_alignment(impl, zero_infinity):
    """Target longer than the input: inf (or 0) loss, zero gradient, a warning; the others are unaffected."""
    need(impl)
    logits, targets, input_lengths, target_lengths = make_case(3)
    input_lengths[1], target_lengths[1] = 2, 4
    case = (logits, targets, input_lengths, target_lengths)
    with pytest.warns(RuntimeWarning, match=r"no alignment for batch entries \[1\]"):
        loss, grad = loss_and_grad(ours(impl), *case, reduction="none", zero_infinity=zero_infinity)
    assert loss[1] == (0 if zero_infinity else float("inf"))
    assert (grad[:, 1] == 0).all() and torch.isfinite(grad).all()
    loss_t, grad_t = loss_and_grad(torch_ctc, *case, reduction="none", zero_infinity=True)
    keep = torch.arange(len(loss)) != 1
    assert_rel(loss[keep], loss_t[keep], "loss")
    assert_rel(grad, grad_t, "grad")
    assert ops.ctc_feasible(targets, input_lengths, target_lengths).tolist() == [
        True,
        False,
        True,
        True,
        True,
    ]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradcheck_float64(reduction):
    need("native")
    logits, targets, input_lengths, target_lengths = make_case(4, T=6, B=3, C=4, S=2, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: ops.ctc_loss(z, targets, input_lengths, target_lengths, reduction=reduction, impl="native"),
        (logits,),
    )


def test_cuda_matches_torch():
    need("native", "cuda")
    logits, targets, input_lengths, target_lengths = make_case(5)
    loss, grad = loss_and_grad(
        ours("native"), logits.cuda(), targets.cuda(), input_lengths, target_lengths, reduction="none"
    )
    loss_t, grad_t = loss_and_grad(
        torch_ctc, logits, targets, input_lengths, target_lengths, reduction="none"
    )
    assert_rel(loss.cpu(), loss_t, "loss")
    assert_rel(grad.cpu(), grad_t, "grad")


def test_bad_label_names_it():
    logits, targets, input_lengths, target_lengths = make_case(6)
    targets[0, 0] = 0  # the blank
    with pytest.raises(ValueError, match="other than blank=0"):
        ops.ctc_loss(logits, targets, input_lengths, target_lengths, impl="reference")

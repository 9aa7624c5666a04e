import pytest
import torch

from seqtrain.config import AdamWConfig, SGDConfig
from seqtrain.errors import ConfigError
from seqtrain.optim import build_optimizer


def test_weight_decay_skips_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(AdamWConfig(lr=0.1, weight_decay=0.5), model.parameters())
    decayed, plain = opt.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])] and decayed["weight_decay"] == 0.5
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    everything = build_optimizer(
        AdamWConfig(weight_decay=0.5, weight_decay_skip_bias_and_norm=False), model.parameters()
    )
    assert len(everything.param_groups) == 1


def test_sgd_nesterov_needs_momentum():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer(SGDConfig(lr=0.1, momentum=0.9, nesterov=True), params)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="optimizer.nesterov: needs optimizer.momentum > 0"):
        build_optimizer(SGDConfig(nesterov=True), params)


def test_adam_uses_the_fused_kernel_where_torch_has_it_and_steps_as_the_loop():
    """Fused on CPU float parameters (torch >= 2.4), and the same update as torch's per-tensor Adam."""
    from seqtrain.config import AdamConfig

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    twin = torch.nn.Linear(5, 3)
    twin.load_state_dict(model.state_dict())
    ours = build_optimizer(AdamConfig(lr=0.01), model.parameters())
    loop = torch.optim.Adam(twin.parameters(), lr=0.01, foreach=False)
    assert ours.defaults["fused"] is (True if torch.__version__ >= "2.4" else None)
    x = torch.randn(7, 5)
    for _ in range(3):
        for m, opt in ((model, ours), (twin, loop)):
            opt.zero_grad()
            m(x).square().sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    meta = [torch.nn.Parameter(torch.zeros(2, device="meta"))]
    assert build_optimizer(AdamConfig(), meta).defaults["fused"] is None

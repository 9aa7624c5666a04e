"""Optimizers by name, from the `optimizer` config group."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from seqtrain.config import OptimizerConfig
from seqtrain.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")


def param_groups(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> list[dict]:
    """Two groups when biases and norm scales (1-dim parameters) skip weight decay, else one.
    The groups keep the parameters' order, which pretraining relies on to carry optimizer state over."""
    params = list(params)
    if not cfg.weight_decay or not cfg.weight_decay_skip_bias_and_norm:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.dim() > 1]},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
    ]


def fused_available(groups: list[dict]) -> bool:
    """Whether torch's fused Adam kernel runs these parameters: floating point, on CPU (torch >= 2.4) or CUDA.
    It updates all parameters in one pass, ~7x faster than the per-tensor loop on CPU (8.7 vs 1.3 ms for a
    2x256 BLSTM's 2.2M parameters), a few percent of a training step."""
    tensors = [p for group in groups for p in group["params"]]
    devices = {p.device.type for p in tensors}
    if not tensors or not devices <= {"cpu", "cuda"} or not all(p.is_floating_point() for p in tensors):
        return False
    return "cpu" not in devices or torch.__version__ >= "2.4"


def build_optimizer(cfg: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    params = param_groups(cfg, params)
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(
            params,
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            amsgrad=cfg.amsgrad,
            fused=fused_available(params) or None,
        )
    if cfg.name == "sgd":
        if cfg.nesterov and cfg.momentum <= 0:
            raise ConfigError("optimizer.nesterov: needs optimizer.momentum > 0")
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    raise ConfigError(f"optimizer.name: unknown {cfg.name!r}; known: {', '.join(OPTIMIZERS)}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

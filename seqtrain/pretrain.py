"""Layer-wise pretraining (RETURNN's `pretrain`): the network grows over the first epochs, one hidden layer
per stage, and each new network starts from the parameters of the previous one, copied by layer name.

The stages are layer dicts; the Engine builds a Network from `layers_for_epoch(epoch)` when it changes, copies
the parameters with `copy_params_by_name` and carries the optimizer state over with `remap_optimizer_state`.
"""

from __future__ import annotations

import copy
import importlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from seqtrain.config import PretrainConfig
from seqtrain.errors import ConfigError

log = logging.getLogger(__name__)

LayerDict = dict[str, dict[str, Any]]


def sources(layer: Mapping[str, Any]) -> list[str]:
    """A layer's `from` as a list (default `data`, as in the Network)."""
    src = layer.get("from", "data")
    return [src] if isinstance(src, str) else list(src)


def is_input(src: str) -> bool:
    return src == "data" or src.startswith("data:")


def is_output_layer(name: str, layer: Mapping[str, Any]) -> bool:
    """The Network's rule: `output`, any layer with a `loss`, or one marked `is_output_layer`."""
    return name == "output" or bool(layer.get("loss")) or bool(layer.get("is_output_layer"))


def output_layers(layers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [
        name for name, layer in layers.items() if not name.startswith("#") and is_output_layer(name, layer)
    ]


def _trainable(layer: Mapping[str, Any]) -> bool:
    return bool(layer.get("trainable", True))


class Pretrain:
    """The stages of the growing network; stage i runs for `repetitions[i]` epochs, from epoch 1.

    As in RETURNN, the last stage is the full network and still counts as pretraining (fixed LR); after the
    last pretrain epoch, `stage_for_epoch` is None and `layers_for_epoch` gives the full network.
    """

    def __init__(self, cfg: PretrainConfig, full_layers: Mapping[str, Any]):
        self.cfg = cfg
        self.full: LayerDict = _plain(full_layers)
        self.outputs = output_layers(self.full)
        if not self.outputs:
            raise ConfigError(
                "pretrain: the network has no output layer ('output', or a layer with a 'loss')"
            )
        self.algo = cfg.construction_algo
        stages = self._construct()
        if self.algo in ("from_output", "from_input"):
            stages = self._drop_stages_without_new_trainable(stages)
        self.stages = stages
        self.repetitions = self._repetitions(cfg.repetitions)
        self._stage_of_epoch = [i for i, n in enumerate(self.repetitions) for _ in range(n)]

    def __str__(self) -> str:
        return (
            f"pretrain {self.algo}: {self.num_stages} stages over {self.num_epochs} epochs "
            f"(repetitions {self.repetitions})"
        )

    # --- public ---
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def num_epochs(self) -> int:
        """Epochs covered by pretraining, the full-network stage included (RETURNN get_train_num_epochs)."""
        return len(self._stage_of_epoch)

    def is_pretrain_epoch(self, epoch: int) -> bool:
        return 1 <= epoch <= self.num_epochs

    def stage_for_epoch(self, epoch: int) -> int | None:
        return self._stage_of_epoch[epoch - 1] if self.is_pretrain_epoch(epoch) else None

    def layers_for_epoch(self, epoch: int) -> LayerDict:
        stage = self.stage_for_epoch(epoch)
        return copy.deepcopy(self.full if stage is None else self.stages[stage])

    def learning_rate(self, epoch: int, lr_control: Any) -> float:
        """RETURNN's TF engine: pretrain epochs use the fixed pretrain LR, the first epoch after them the
        initial LR, later ones lr_control. Recorded in lr_control; a `learning_rates` entry for the epoch
        wins."""
        if not self.cfg.use_learning_rate_control_always and epoch <= self.num_epochs + 1:
            fixed = self.cfg.learning_rate if self.is_pretrain_epoch(epoch) else None
            lr_control.set_fixed_learning_rate(
                epoch, lr_control.default_learning_rate if fixed is None else fixed
            )
        return lr_control.learning_rate(epoch)

    def skip_copy_layers(self, epoch: int) -> list[str]:
        """Layers whose parameters are not carried into this epoch's network (copy_output_layer: false)."""
        if self.cfg.copy_output_layer or not self.is_pretrain_epoch(epoch):
            return []
        return output_layers(self.layers_for_epoch(epoch))

    # --- construction (RETURNN Pretrain._construct_epochs_*) ---
    def _construct(self) -> list[LayerDict]:
        if self.algo == "from_output":
            return self._from_output()
        if self.algo == "from_input":
            return self._from_input()
        if self.algo == "no_network_modifications":
            return [copy.deepcopy(self.full)]
        if "." in self.algo:
            return self._custom(_import_function(self.algo))
        raise ConfigError(
            f"pretrain.construction_algo: unknown {self.algo!r}; known: from_output, from_input, "
            "no_network_modifications, or a dotted path to fn(idx, net_dict) -> net_dict|None"
        )

    def _from_output(self) -> list[LayerDict]:
        stages = [copy.deepcopy(self.full)]
        while (smaller := self._shrink(stages[0])) is not None:
            stages.insert(0, smaller)
        return stages

    def _shrink(self, net: LayerDict) -> LayerDict | None:
        """RETURNN _construct_new_epoch_from_output: replace the outputs' sources by their sources, until a
        trainable layer went away; None once only the input is left."""
        new = copy.deepcopy(net)
        while True:
            current = sorted({s for out in self.outputs for s in sources(new[out])})
            new_sources, deleted = set(), set()
            for src in current:
                if is_input(src):
                    new_sources.add(src)
                else:
                    new_sources.update(sources(new[src]))
                    deleted.add(src)
            if not deleted:
                return None
            new_sources -= deleted  # an output source fed by another one: its sources are in already
            for name in deleted:
                del new[name]
            for out in self.outputs:
                new[out]["from"] = sorted(new_sources)
            # An output reading the input directly would change its input dim; RETURNN skips such a stage.
            if any(is_input(s) for s in new_sources):
                continue
            if all(not _trainable(self.full[name]) for name in deleted):
                continue
            return new

    def _from_input(self) -> list[LayerDict]:
        stages = []
        depth = 1
        while (net := self._grow(depth)) is not None:
            stages.append(net)
            depth += 1
        return [*stages, copy.deepcopy(self.full)]

    def _grow(self, depth: int) -> LayerDict | None:
        """RETURNN _construct_next_epoch_from_input: the layers within `depth` steps of the input
        (non-trainable ones for free), plus the outputs rewired to the deepest existing layers; None once
        nothing is missing."""
        new: LayerDict = {}
        frontier = ["data"]
        while added := [
            n for n in self._descendants(frontier) if n not in new and not _trainable(self.full[n])
        ]:
            new.update({n: copy.deepcopy(self.full[n]) for n in added})
            frontier += added
        for _ in range(depth):
            frontier = [n for n in self._descendants(frontier) if n not in new]
            if not frontier:
                return None
            new.update({n: copy.deepcopy(self.full[n]) for n in frontier})
        new.update({n: copy.deepcopy(self.full[n]) for n in self.outputs if n not in new})
        if all(is_input(s) or s in new for layer in new.values() for s in sources(layer)):
            return None  # this is the full topology
        for name, layer in new.items():
            existing = self._existing_inputs(new, name)
            if existing != sources(layer):
                layer["from"] = [s for s in existing if not is_input(s)] or existing
        return new

    def _descendants(self, srcs: Iterable[str]) -> list[str]:
        srcs = set(srcs)
        matches = lambda s: s in srcs or ("data" in srcs and is_input(s))  # noqa: E731
        return [n for n, layer in sorted(self.full.items()) if any(matches(s) for s in sources(layer))]

    def _existing_inputs(self, net: LayerDict, name: str) -> list[str]:
        """The nearest sources of `name` (full network) that exist in `net`, walking through missing ones."""
        found, seen, stack = [], {name}, list(reversed(sources(self.full[name])))
        while stack:
            src = stack.pop()
            if is_input(src) or src in net:
                if src not in found:
                    found.append(src)
            elif src not in seen:
                seen.add(src)
                stack.extend(reversed(sources(self.full[src])))
        return found

    def _custom(self, fn: Callable[..., Any]) -> list[LayerDict]:
        stages = []
        while net := fn(idx=len(stages), net_dict=copy.deepcopy(self.full)):
            stages.append(_plain(net))
        return [*stages, copy.deepcopy(self.full)]

    @staticmethod
    def _drop_stages_without_new_trainable(stages: list[LayerDict]) -> list[LayerDict]:
        """RETURNN _remove_non_trainable_added_only: a stage must add a trainable non-output layer."""
        kept = []
        for before, after in zip([{}, *stages[:-2]], stages[:-1]):
            added = [n for n in after if n not in before and not is_output_layer(n, after[n])]
            if any(_trainable(after[n]) for n in added):
                kept.append(after)
        return [*kept, stages[-1]]

    def _repetitions(self, value: Any) -> list[int]:
        """An int, a list (the last entry repeats), or RETURNN's {default: n, final: n, <stage>: n}; a stage
        dict may carry its own `#repetition`."""
        value = _plain(value) or 1
        n = self.num_stages
        if isinstance(value, dict):
            reps = [int(value.get("default", 1))] * n
            for key, reps_of_stage in value.items():
                if key != "default":
                    reps[n - 1 if key == "final" else int(key)] = int(reps_of_stage)
        else:
            reps = [int(v) for v in (value if isinstance(value, list) else [value])]
            if not 0 < len(reps) <= n:
                raise ConfigError(f"pretrain.repetitions: {len(reps)} entries for {n} stages")
            reps += [reps[-1]] * (n - len(reps))
        for i, stage in enumerate(self.stages):
            if "#repetition" in stage:
                reps[i] = int(stage.pop("#repetition"))
        if any(r < 0 for r in reps):
            raise ConfigError(f"pretrain.repetitions: must be >= 0, got {reps}")
        return reps


def build_pretrain(cfg: PretrainConfig, full_layers: Mapping[str, Any]) -> Pretrain | None:
    """The Pretrain for `cfg`, or None when pretraining is off."""
    if not cfg.enabled:
        return None
    pretrain = Pretrain(cfg, full_layers)
    log.info("%s", pretrain)
    return pretrain


# --- carrying a network's state into the next stage ---


def layer_of(key: str) -> str | None:
    """`layers.<layer>.<param>` -> `<layer>` (the Network's state_dict naming)."""
    parts = key.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "layers" else None


def copy_params_by_name(
    old_state_dict: Mapping[str, torch.Tensor], new_module: torch.nn.Module, skip_layers: Collection[str] = ()
) -> list[str]:
    """Copy parameters and buffers whose names and shapes match into `new_module`; the rest keep their fresh
    initialisation. Returns log lines for everything not copied (new, reshaped, skipped, dropped)."""
    lines, copied = [], {}
    new_state = new_module.state_dict()
    for key, value in new_state.items():
        old = old_state_dict.get(key)
        if layer_of(key) in skip_layers:
            lines.append(f"{key}: re-initialised (pretrain.copy_output_layer is false)")
        elif old is None:
            lines.append(f"{key}: new, initialised")
        elif old.shape != value.shape:
            lines.append(f"{key}: shape {tuple(old.shape)} -> {tuple(value.shape)}, re-initialised")
        else:
            copied[key] = old
    new_module.load_state_dict(copied, strict=False)
    lines += [f"{key}: not in the new network, dropped" for key in old_state_dict if key not in new_state]
    return [f"copied {len(copied)} of {len(new_state)} tensors by name", *lines]


def remap_optimizer_state(
    old_state: Mapping[str, Any],
    old_param_names: list[str],
    new_optimizer: torch.optim.Optimizer,
    new_param_names: list[str],
    skip_layers: Collection[str] = (),
) -> list[str]:
    """Give `new_optimizer` the per-parameter state (Adam moments, momentum) of the old optimizer, matched by
    parameter name; the names list each optimizer's parameters in its param-group order (the order of
    `module.named_parameters()` when it was built from `module.parameters()`). Hyperparameters stay new."""
    old_ids = [i for group in old_state["param_groups"] for i in group["params"]]
    new_params = [p for group in new_optimizer.param_groups for p in group["params"]]
    if len(old_ids) != len(old_param_names) or len(new_params) != len(new_param_names):
        raise ValueError("remap_optimizer_state: parameter names do not match the optimizers' parameters")
    old_by_name = dict(zip(old_param_names, old_ids))
    state_dict = new_optimizer.state_dict()
    new_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
    carried, lines = {}, []
    for new_id, name, param in zip(new_ids, new_param_names, new_params):
        per_param = old_state["state"].get(old_by_name.get(name), None)
        if not per_param or layer_of(name) in skip_layers:
            continue
        if any(torch.is_tensor(v) and v.dim() > 0 and v.shape != param.shape for v in per_param.values()):
            lines.append(f"{name}: optimizer state reset (shape changed)")
            continue
        carried[new_id] = {k: v.clone() if torch.is_tensor(v) else v for k, v in per_param.items()}
    state_dict["state"] = carried
    new_optimizer.load_state_dict(state_dict)
    return [f"optimizer state carried over for {len(carried)} of {len(new_params)} parameters", *lines]


# --- helpers ---


def _import_function(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"pretrain.construction_algo: cannot import {path!r} ({exc})") from None
    if not callable(fn):
        raise ConfigError(f"pretrain.construction_algo: {path!r} is not a function")
    return fn


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return copy.deepcopy(value)

"""Network: builds the layers of a RETURNN-style layer dict, from the output layers back through `from`.

`from` defaults to `data`; `data:KEY` reads another data key; a list of sources is concatenated on the
feature dim. Names starting with `#` are ignored. Layers are submodules named like the dict keys, so
state_dict keys read `layers.<layer>.<param>`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqtrain.datasets.base import DataSpec
from seqtrain.errors import ConfigError, NetworkError
from seqtrain.layers import LAYERS, Layer
from seqtrain.layers.loss import LOSSES, LossValue, check_loss
from seqtrain.layers.rec import RecLayer
from seqtrain.registry import parse_options
from seqtrain.tensor import Dim, Tensor

log = logging.getLogger(__name__)


def _kernel_lstm(layer: Layer) -> bool:
    """A rec layer that our LSTM kernel may run (rec_groups, rec_chains)."""
    return isinstance(layer, RecLayer) and layer.opts.unit in ("lstm", "nativelstm")


class Network(nn.Module):
    def __init__(self, layer_dict: Mapping[str, Any], extern_data: dict[str, DataSpec]):
        super().__init__()
        self.extern_data = extern_data
        self.layer_dict = {k: v for k, v in layer_dict.items() if not str(k).startswith("#")}
        self.sources: dict[str, list[str]] = {}
        self.specs: dict[str, DataSpec] = {}
        self.layers = nn.ModuleDict()
        outputs = self.output_layer_names()
        if not outputs:
            raise ConfigError(
                "network.layers: no output layer (name one 'output', give a layer a 'loss', "
                "or set is_output_layer: true)"
            )
        for name in outputs:
            self._build(name, [])
        unused = [name for name in self.layer_dict if name not in self.layers]
        if unused:  # as in RETURNN they are not built; a typo in a `from` should not pass unnoticed
            log.warning("network.layers: %s not reachable from an output layer, not built", ", ".join(unused))
        self.rec_groups = self._rec_groups()
        self.rec_chains = self._rec_chains()

    def output_layer_names(self) -> list[str]:
        def is_output(name: str, d: Any) -> bool:
            return name == "output" or (
                isinstance(d, Mapping) and (d.get("loss") or d.get("is_output_layer"))
            )

        return [name for name, d in self.layer_dict.items() if is_output(name, d)]

    @property
    def loss_layers(self) -> list[str]:
        return [name for name, layer in self.layers.items() if layer.opts.loss]

    # --- construction ---
    def _build(self, name: str, stack: list[str]) -> DataSpec:
        if name in self.specs:
            return self.specs[name]
        if name in stack:
            raise NetworkError(name, f"cycle in 'from': {' -> '.join([*stack[stack.index(name) :], name])}")
        options = self.layer_dict[name]
        if not isinstance(options, Mapping):
            raise NetworkError(name, f"expected a dict of layer options, got {options!r}")
        if "." in name:
            raise NetworkError(name, "layer names must not contain '.'")
        options = dict(options)
        class_name = options.pop("class", None)
        if class_name is None:
            raise NetworkError(name, f"missing 'class'; known: {', '.join(LAYERS.names())}")
        sources = options.pop("from", "data")
        sources = [sources] if isinstance(sources, str) else list(sources)
        inputs = [self._source_spec(name, src, [*stack, name]) for src in sources]
        cls, schema = LAYERS.get(class_name, f"network.layers.{name}.class")
        self._default_n_out(options, schema)
        opts = parse_options(schema, options, f"network.layers.{name}")
        if opts.loss:
            check_loss(name, opts.loss, opts.loss_opts)
            if opts.target not in self.extern_data:
                raise NetworkError(
                    name, f"target: unknown data key {opts.target!r}; known: {', '.join(self.extern_data)}"
                )
        if cls.concat_sources and len(inputs) > 1:
            inputs = [self._concat_spec(name, inputs)]
        shared = getattr(opts, "reuse_params", None)
        if shared is not None and shared not in self.layer_dict:
            raise NetworkError(name, f"reuse_params: unknown layer {shared!r}")
        shared_spec = self._build(shared, [*stack, name]) if shared is not None else None
        layer: Layer = cls(name, opts, inputs)
        if shared_spec is not None:
            layer.tie_weight(self.layers[shared])
        self.layers[name] = layer
        self.sources[name] = sources
        self.specs[name] = layer.out_spec
        return layer.out_spec

    def _default_n_out(self, options: dict, schema: type) -> None:
        """As RETURNN: a layer with a loss on a sparse target gets n_out = the number of classes, plus one
        for the blank of a `ctc` loss."""
        target = self.extern_data.get(options.get("target", "classes"))
        has_n_out = any(f.name == "n_out" for f in dataclasses.fields(schema))
        sparse_target = target is not None and target.sparse
        if has_n_out and "n_out" not in options and options.get("loss") and sparse_target:
            options["n_out"] = target.dim + (1 if options["loss"] == "ctc" else 0)

    def _source_spec(self, layer: str, src: str, stack: list[str]) -> DataSpec:
        if src == "data" or src.startswith("data:"):
            key = src.partition(":")[2] or "data"
            if key not in self.extern_data:
                raise NetworkError(
                    layer, f"from: unknown data key {key!r}; known: {', '.join(self.extern_data)}"
                )
            return self.extern_data[key]
        if src not in self.layer_dict:
            raise NetworkError(layer, f"from: unknown layer {src!r}; known: {', '.join(self.layer_dict)}")
        return self._build(src, stack)

    @staticmethod
    def _concat_spec(layer: str, inputs: list[DataSpec]) -> DataSpec:
        if any(s.sparse for s in inputs):
            raise NetworkError(
                layer, "from: cannot concatenate sparse sources (class indices); embed them first"
            )
        if len({s.time for s in inputs}) > 1:
            raise NetworkError(layer, "from: cannot concatenate sources with and without a time axis")
        return DataSpec(sum(s.dim for s in inputs), time=inputs[0].time)

    def _rec_groups(self) -> dict[str, list[str]]:
        """LSTM rec layers with the same sources (a BLSTM layer's directions), keyed by the first of them:
        the forward pass runs each group at once (RecLayer.forward_group)."""
        by_sources: dict[tuple, list[str]] = {}
        for name, layer in self.layers.items():
            if _kernel_lstm(layer):
                # equal sizes: each runs on one thread, so a larger one would keep the others waiting
                by_sources.setdefault((*self.sources[name], layer.opts.n_out), []).append(name)
        return {names[0]: names for names in by_sources.values() if len(names) > 1}

    def _rec_chains(self) -> dict[str, list[str]]:
        """Stacks of forward LSTM rec layers, each reading only the one before (an LSTM LM's layers), keyed by
        the first: the forward pass pipelines them over time (RecLayer.forward_chain)."""
        grouped = {m for members in self.rec_groups.values() for m in members}

        def stackable(name: str) -> bool:
            layer = self.layers[name]
            return _kernel_lstm(layer) and layer.opts.direction == 1 and name not in grouped

        chains, taken = {}, set()
        for name in self.layers:
            if not stackable(name) or name in taken:
                continue
            chain = [name]
            while nxt := next(
                (
                    n
                    for n in self.layers
                    if n not in taken and stackable(n) and self.sources[n] == [chain[-1]]
                ),
                None,
            ):
                chain.append(nxt)
                taken.add(nxt)
            if len(chain) > 1:
                chains[name] = chain
        return chains

    # --- running ---
    def forward(self, data: dict[str, Tensor]) -> dict[str, Tensor]:
        return self._run(data, lambda name, layer, inputs: layer(*inputs), self.rec_groups, self.rec_chains)

    def forward_piece(self, data: dict[str, Tensor], state: dict[str, Any]) -> tuple[dict[str, Tensor], dict]:
        """Runs on the next piece of each sequence (e.g. one more token of an LM's prefixes), continuing from
        `state` (what this returned for the previous piece, {} at the start): the outputs on the piece and the
        state after it, per layer that carries one. Needs `piece_blocker() is None`."""
        new_state: dict[str, Any] = {}

        def run(name: str, layer: Layer, inputs: list[Tensor]) -> Tensor:
            out, layer_state = layer.forward_piece(inputs, state.get(name))
            if layer_state is not None:
                new_state[name] = layer_state
            return out

        return self._run(data, run, {}, {}), new_state

    def piece_blocker(self) -> str | None:
        """The first layer that cannot run on pieces of sequences (forward_piece), or None."""
        return next((name for name, layer in self.layers.items() if not layer.runs_in_pieces), None)

    def _run(self, data: dict[str, Tensor], call, groups: dict, chains: dict) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        for name, layer in self.layers.items():  # insertion order is a topological order
            if name in outputs:  # ran with its group or chain
                continue
            if name in chains:
                x = self._inputs(name, data, outputs)[0]
                members = [self.layers[m] for m in chains[name]]
                if RecLayer.chain_pipelines(members, x):
                    outputs.update(zip(chains[name], RecLayer.forward_chain(members, x, self.training)))
                else:  # the layers one after the other, as any others
                    outputs[name] = call(name, layer, [x])
                continue
            if name in groups:
                members = groups[name]
                # same sources: without dropout the members share one input (one concatenation, one copy)
                shared = not self.training or not any(self.layers[m].opts.dropout for m in members)
                xs = (
                    [self._inputs(members[0], data, outputs)[0]] * len(members)
                    if shared
                    else [self._inputs(member, data, outputs)[0] for member in members]
                )
                outputs.update(zip(members, RecLayer.forward_group([self.layers[m] for m in members], xs)))
                continue
            outputs[name] = call(name, layer, self._inputs(name, data, outputs))
        return outputs

    def _inputs(self, name: str, data: dict[str, Tensor], outputs: dict[str, Tensor]) -> list[Tensor]:
        """Layer `name`'s inputs: its sources, with its dropout in training, concatenated if it does that."""
        layer = self.layers[name]
        inputs = [
            data[s.partition(":")[2] or "data"] if s.split(":")[0] == "data" else outputs[s]
            for s in self.sources[name]
        ]
        if layer.opts.dropout and self.training:
            inputs = [
                x if x.sparse_dim is not None else x.copy(raw=F.dropout(x.raw, layer.opts.dropout))
                for x in inputs
            ]
        if layer.concat_sources and len(inputs) > 1:
            inputs = [self._concat(name, inputs)]
        return inputs

    @staticmethod
    def _concat(name: str, inputs: list[Tensor]) -> Tensor:
        first = inputs[0]
        if len({x.raw.shape[:-1] for x in inputs}) > 1:
            shapes = ", ".join(str(tuple(x.raw.shape)) for x in inputs)
            raise NetworkError(name, f"from: sources differ in batch/time shape: {shapes}")
        # (Keeping time-major sources time-major saved the next LSTM its input copy but made the training step
        # slower: the layers after it and the gradients then run on non-contiguous tensors.)
        raw = torch.cat([x.raw for x in inputs], dim=-1)
        return first.with_feature(raw, Dim(f"{name}:concat", raw.shape[-1]))

    def losses(self, outputs: dict[str, Tensor], data: dict[str, Tensor]) -> dict[str, LossValue]:
        """One LossValue per layer with a `loss`, keyed by layer name."""
        result = {}
        for name in self.loss_layers:
            opts = self.layers[name].opts
            result[name] = LOSSES[opts.loss](outputs[name], data[opts.target], opts.loss_opts, name)
        return result

    def total_loss(self, losses: dict[str, LossValue]) -> torch.Tensor:
        """What the gradient is taken of: per layer, the frame sum (or per-frame mean) times loss_scale."""
        total = 0.0
        for name, value in losses.items():
            opts = self.layers[name].opts
            loss = (
                value.loss_sum / value.num_frames.clamp_min(1) if opts.use_normalized_loss else value.loss_sum
            )
            total = total + opts.loss_scale * loss
        for layer in self.layers.values():
            if layer.opts.L2:  # RETURNN: L2 on the layer's parameters, added to the total loss
                total = total + layer.opts.L2 * sum((p * p).sum() for p in layer.parameters())
        return total

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

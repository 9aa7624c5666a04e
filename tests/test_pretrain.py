"""Pretraining: stages (against RETURNN's Pretrain where importable), epochs, LR, parameter copy."""

from __future__ import annotations

import textwrap

import pytest
import torch

from seqtrain.config import LRControlConfig, PretrainConfig
from seqtrain.datasets.base import DataSpec
from seqtrain.errors import ConfigError
from seqtrain.lr_control import build_lr_control
from seqtrain.network import Network
from seqtrain.pretrain import Pretrain, build_pretrain, copy_params_by_name, remap_optimizer_state

EXTERN = {"data": DataSpec(5), "classes": DataSpec(3, sparse=True, dtype="int64")}


def hidden(n_out: int = 8, **kwargs) -> dict:
    return {"class": "linear", "activation": "relu", "n_out": n_out, **kwargs}


def three_hidden() -> dict:
    return {
        "l1": hidden(),
        "l2": hidden(**{"from": "l1"}),
        "l3": hidden(**{"from": ["l2"]}),
        "output": {"class": "softmax", "from": "l3", "loss": "ce", "target": "classes"},
    }


def blstm_like() -> dict:
    return {
        "fw1": hidden(),
        "bw1": hidden(),
        "fw2": hidden(**{"from": ["fw1", "bw1"]}),
        "bw2": hidden(**{"from": ["fw1", "bw1"]}),
        "output": {"class": "softmax", "from": ["fw2", "bw2"], "loss": "ce", "target": "classes"},
    }


def with_frozen_window() -> dict:
    return {
        "window": {"class": "copy", "trainable": False},
        "l1": hidden(**{"from": ["window"]}),
        "l2": hidden(**{"from": ["l1"]}),
        "output": {"class": "softmax", "from": ["l2"], "loss": "ce", "target": "classes"},
    }


def stage_layers(pretrain: Pretrain) -> list[set[str]]:
    return [set(stage) for stage in pretrain.stages]


@pytest.mark.parametrize("algo", ["from_output", "from_input"])
def test_three_hidden_layers_grow_one_per_stage(algo):
    pretrain = Pretrain(PretrainConfig(enabled=True, construction_algo=algo), three_hidden())
    assert stage_layers(pretrain) == [{"l1", "output"}, {"l1", "l2", "output"}, {"l1", "l2", "l3", "output"}]
    assert pretrain.stages[0]["output"]["from"] == ["l1"]
    assert pretrain.stages[1]["output"]["from"] == ["l2"]
    assert pretrain.num_stages == pretrain.num_epochs == 3
    assert [pretrain.stage_for_epoch(e) for e in range(1, 6)] == [0, 1, 2, None, None]
    assert pretrain.layers_for_epoch(9) == three_hidden()
    for epoch in (1, 2, 3):  # every stage builds
        Network(pretrain.layers_for_epoch(epoch), EXTERN)


def test_pairs_of_layers_grow_together():
    pretrain = Pretrain(PretrainConfig(enabled=True), blstm_like())
    assert stage_layers(pretrain) == [{"fw1", "bw1", "output"}, set(blstm_like())]
    assert pretrain.stages[0]["output"]["from"] == ["bw1", "fw1"]


def test_non_trainable_layers_do_not_make_a_stage():
    pretrain = Pretrain(PretrainConfig(enabled=True), with_frozen_window())
    assert stage_layers(pretrain) == [{"window", "l1", "output"}, set(with_frozen_window())]


def test_repetitions():
    cfg = PretrainConfig(enabled=True, repetitions=[1, 2])
    pretrain = Pretrain(cfg, three_hidden())
    assert pretrain.repetitions == [1, 2, 2]
    assert [pretrain.stage_for_epoch(e) for e in range(1, 7)] == [0, 1, 1, 2, 2, None]
    cfg.repetitions = {"default": 2, "final": 1, 0: 3}
    assert Pretrain(cfg, three_hidden()).repetitions == [3, 2, 1]
    cfg.repetitions = [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="pretrain.repetitions"):
        Pretrain(cfg, three_hidden())


def test_custom_construction_function(tmp_path, monkeypatch):
    (tmp_path / "my_pretrain.py").write_text(
        textwrap.dedent("""
        def stages(idx, net_dict):
            if idx >= 1:
                return None
            del net_dict["l3"]
            net_dict["output"]["from"] = "l2"
            net_dict["#repetition"] = 2
            return net_dict
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pretrain = Pretrain(PretrainConfig(enabled=True, construction_algo="my_pretrain.stages"), three_hidden())
    assert stage_layers(pretrain) == [{"l1", "l2", "output"}, set(three_hidden())]
    assert pretrain.repetitions == [2, 1] and "#repetition" not in pretrain.stages[0]


@pytest.mark.parametrize(
    ("algo", "layers", "match"),
    [
        ("sideways", three_hidden(), "unknown 'sideways'"),
        ("no_such_module.fn", three_hidden(), "cannot import"),
        ("from_output", {"l1": hidden()}, "no output layer"),
    ],
)
def test_config_errors(algo, layers, match):
    with pytest.raises(ConfigError, match=match):
        Pretrain(PretrainConfig(enabled=True, construction_algo=algo), layers)


def test_disabled_gives_none():
    assert build_pretrain(PretrainConfig(), three_hidden()) is None


def test_learning_rates_follow_returnn_tf_engine():
    pretrain = Pretrain(PretrainConfig(enabled=True, learning_rate=0.1), three_hidden())
    control = build_lr_control(LRControlConfig(type="newbob", learning_rate=1.0))
    lrs = []
    for epoch, score in enumerate([3.0, 2.5, 2.0, 2.0, 1.99], 1):
        lrs.append(pretrain.learning_rate(epoch, control))
        control.set_epoch_scores(epoch, {"dev_score_output": score})
    lrs.append(pretrain.learning_rate(6, control))
    # pretrain epochs at 0.1, the first after them at the initial 1.0, then Newbob (no gain 2.0 -> 2.0: decay)
    assert lrs == [0.1, 0.1, 0.1, 1.0, 0.5, 0.25]


def test_copy_output_layer_false_skips_outputs_in_pretrain_epochs():
    pretrain = Pretrain(PretrainConfig(enabled=True, copy_output_layer=False), three_hidden())
    assert pretrain.skip_copy_layers(2) == ["output"]
    assert pretrain.skip_copy_layers(4) == []
    assert Pretrain(PretrainConfig(enabled=True), three_hidden()).skip_copy_layers(2) == []


# --- carrying parameters and optimizer state into the next stage ---


def grown_networks():
    pretrain = Pretrain(PretrainConfig(enabled=True), three_hidden())
    torch.manual_seed(0)
    small = Network(pretrain.layers_for_epoch(1), EXTERN)
    bigger = pretrain.layers_for_epoch(2)
    bigger["l2"]["n_out"] = 6  # the output's input dim changes too
    torch.manual_seed(1)
    return small, Network(bigger, EXTERN)


def test_copy_params_by_name():
    small, big = grown_networks()
    fresh = {k: v.clone() for k, v in big.state_dict().items()}
    lines = copy_params_by_name(small.state_dict(), big)
    new = big.state_dict()
    assert torch.equal(new["layers.l1.linear.weight"], small.state_dict()["layers.l1.linear.weight"])
    assert torch.equal(new["layers.l2.linear.weight"], fresh["layers.l2.linear.weight"])
    assert torch.equal(new["layers.output.linear.weight"], fresh["layers.output.linear.weight"])
    assert lines[0] == "copied 3 of 6 tensors by name"  # l1 weight and bias, output bias
    assert "layers.output.linear.weight: shape (3, 8) -> (3, 6), re-initialised" in lines
    assert "layers.l2.linear.weight: new, initialised" in lines
    lines = copy_params_by_name(small.state_dict(), big, skip_layers=["l1"])
    assert "layers.l1.linear.weight: re-initialised (pretrain.copy_output_layer is false)" in lines


def test_remap_optimizer_state():
    small, big = grown_networks()
    old_opt = torch.optim.Adam(small.parameters(), lr=0.1)
    sum(p.sum() for p in small.parameters()).backward()
    old_opt.step()
    copy_params_by_name(small.state_dict(), big)
    new_opt = torch.optim.Adam(big.parameters(), lr=0.01)
    old_names = [n for n, _ in small.named_parameters()]
    new_names = [n for n, _ in big.named_parameters()]
    lines = remap_optimizer_state(old_opt.state_dict(), old_names, new_opt, new_names)
    assert lines == [
        "optimizer state carried over for 3 of 6 parameters",
        "layers.output.linear.weight: optimizer state reset (shape changed)",
    ]
    old_state = dict(zip(old_names, old_opt.state_dict()["state"].values()))
    params = dict(big.named_parameters())
    assert torch.equal(
        new_opt.state[params["layers.l1.linear.weight"]]["exp_avg"],
        old_state["layers.l1.linear.weight"]["exp_avg"],
    )
    assert params["layers.l2.linear.weight"] not in new_opt.state
    assert new_opt.param_groups[0]["lr"] == 0.01
    sum(p.sum() for p in big.parameters()).backward()
    new_opt.step()  # a mix of carried and fresh states steps fine
    assert float(new_opt.state[params["layers.l1.linear.weight"]]["step"]) == 2.0


# --- against RETURNN itself ---


@pytest.mark.parametrize("algo", ["from_output", "from_input"])
@pytest.mark.parametrize("layers", [three_hidden, blstm_like, with_frozen_window])
def test_same_stages_as_returnn(algo, layers):
    returnn_pretrain = pytest.importorskip("returnn.pretrain")
    net = layers()
    for layer in net.values():  # RETURNN expects `from` lists
        if isinstance(layer.get("from"), str):
            layer["from"] = [layer["from"]]
    theirs = returnn_pretrain.Pretrain(net, construction_algo=algo)
    ours = Pretrain(PretrainConfig(enabled=True, construction_algo=algo), net)
    assert ours.num_epochs == theirs.get_train_num_epochs()
    for epoch in range(1, ours.num_epochs + 2):
        assert ours.layers_for_epoch(epoch) == theirs.get_network_json_for_epoch(epoch), epoch

"""The `ctc` loss: against torch's F.ctc_loss, RETURNN's normalisation and blank, greedy label errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seqtrain.layers.conv  # noqa: F401  (registers until layers/__init__ imports them)
import seqtrain.layers.ctc  # noqa: F401
import seqtrain.layers.specaugment  # noqa: F401
from seqtrain.datasets.base import DataSpec
from seqtrain.errors import NetworkError
from seqtrain.layers.loss import LOSSES
from seqtrain.network import Network
from seqtrain.search import greedy_decode
from seqtrain.tensor import Dim, Tensor
from seqtrain.wer import edit_distance
from tests.conftest import compose

CLASSES = 5  # target labels 0..4, blank 5


def batch(seed=0, in_lens=(12, 9, 4), tgt=((1, 2, 2, 3), (4, 0), (1,))):
    torch.manual_seed(seed)
    bdim = Dim("batch", size=len(in_lens))
    logits = torch.randn(len(in_lens), max(in_lens), CLASSES + 1, requires_grad=True)
    out = Tensor(
        torch.softmax(logits, -1), (bdim, Dim("time", seq_lens=torch.tensor(in_lens)), Dim("f", CLASSES + 1))
    )
    out.logits = logits
    labels = torch.zeros(len(tgt), max(map(len, tgt)), dtype=torch.long)
    for i, t in enumerate(tgt):
        labels[i, : len(t)] = torch.tensor(t)
    target = Tensor(
        labels, (bdim, Dim("tt", seq_lens=torch.tensor([len(t) for t in tgt]))), Dim("v", CLASSES)
    )
    return out, target


@pytest.mark.parametrize("impl", ["torch", "reference", "auto"])
def test_loss_sum_equals_torch_with_blank_last(impl):
    out, target = batch()
    value = LOSSES["ctc"](out, target, {"impl": impl}, "output")
    expected = F.ctc_loss(
        torch.log_softmax(out.logits, -1).transpose(0, 1),
        target.raw,
        out.time_dim.seq_lens,
        target.time_dim.seq_lens,
        blank=CLASSES,
        reduction="sum",
    )
    torch.testing.assert_close(value.loss_sum, expected, rtol=1e-5, atol=1e-4)
    assert int(value.num_frames) == 4 + 2 + 1  # RETURNN: normalised by the number of target labels
    value.loss_sum.backward()
    assert out.logits.grad is not None and torch.isfinite(out.logits.grad).all()


def test_errors_are_greedy_label_edit_distances():
    out, target = batch(seed=3)
    value = LOSSES["ctc"](out, target, {}, "output")
    hyps = greedy_decode(torch.log_softmax(out.logits, -1), out.time_dim.seq_lens, CLASSES)
    refs = [[1, 2, 2, 3], [4, 0], [1]]
    assert int(value.errors) == sum(edit_distance(r, h) for r, h in zip(refs, hyps))
    assert LOSSES["ctc"](out, target, {"errors": False}, "output").errors is None


def test_infeasible_sequence_counts_zero_by_default():
    out, target = batch(in_lens=(12, 9, 2), tgt=((1, 2), (3,), (1, 1)))  # "1 1" needs 3 frames
    value = LOSSES["ctc"](out, target, {"impl": "torch"}, "output")
    assert torch.isfinite(value.loss_sum)
    with pytest.warns(RuntimeWarning):
        inf = LOSSES["ctc"](out, target, {"impl": "reference", "zero_infinity": False}, "output")
    assert torch.isinf(inf.loss_sum)


def test_n_out_must_be_classes_plus_one():
    out, target = batch()
    wide = out.copy(raw=torch.zeros(3, 12, 7), dims=(*out.dims[:2], Dim("f", 7)), logits=None)
    with pytest.raises(NetworkError, match="n_out 7 does not fit 5 target classes: give n_out 6"):
        LOSSES["ctc"](wide, target, {}, "output")
    with pytest.raises(NetworkError, match="blank is 5"):
        LOSSES["ctc"](out, target, {"blank": 0}, "output")


def net(layers: dict) -> Network:
    return Network(layers, {"data": DataSpec(8), "classes": DataSpec(CLASSES, sparse=True)})


def test_network_with_ctc_output_and_explicit_n_out():
    network = net({"output": {"class": "softmax", "n_out": CLASSES + 1, "loss": "ctc"}})
    out, target = batch()
    data = {"data": Tensor(torch.randn(3, 12, 8), (out.dims[0], out.dims[1], Dim("f", 8))), "classes": target}
    losses = network.losses(network(data), data)
    assert torch.isfinite(network.total_loss(losses))


def test_default_n_out_of_a_ctc_layer_is_classes_plus_one():
    network = net({"output": {"class": "softmax", "loss": "ctc"}})
    assert network.specs["output"].dim == CLASSES + 1


@pytest.mark.parametrize("preset, blstm_layers", [("fsdd", 2), ("tts", 3)])
def test_preset_networks_build(preset, blstm_layers):
    network = net(compose(f"+experiment={preset}", "network.vars.lstm_dim=8").network.layers)
    assert sum(name.startswith("lstm") for name in network.layers) == 2 * blstm_layers
    assert network.sources["output"] == [f"lstm{blstm_layers}_fw", f"lstm{blstm_layers}_bw"]


def test_librispeech_preset_composes_the_flagship_recipe():
    cfg = compose("+experiment=librispeech", "dataset.root=/data/LibriSpeech")
    assert cfg.network.vars["lstm_dim"] == 512 and cfg.network.layers["output"]["loss"] == "ctc"
    assert cfg.dataset.train["class"] == "librispeech" and cfg.dataset.train["root"] == "/data/LibriSpeech"
    assert cfg.lr_control.type == "newbob_multi_epoch"
    assert cfg.lr_control.newbob_multi_num_epochs == cfg.dataset.train["partition_epoch"]


def test_blstm_ctc_config_builds_and_reduces_time_4x():
    cfg = compose(
        "network=blstm",
        "network.vars.lstm_dim=8",
    )
    network = net(cfg.network.layers)
    assert sum(name.startswith("lstm") for name in network.layers) == 12
    out, target = batch(in_lens=(40, 23, 16))
    data = {"data": Tensor(torch.randn(3, 40, 8), (out.dims[0], out.dims[1], Dim("f", 8))), "classes": target}
    network.train()
    outputs = network(data)
    assert outputs["output"].time_dim.seq_lens.tolist() == [10, 6, 4]
    network.total_loss(network.losses(outputs, data)).backward()

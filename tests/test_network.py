import pytest
import torch
import torch.nn.functional as F

from seqtrain.datasets.base import DataSpec
from seqtrain.errors import ConfigError, NetworkError
from seqtrain.network import Network
from seqtrain.tensor import Dim, Tensor

EXTERN = {"data": DataSpec(5), "classes": DataSpec(3, sparse=True, dtype="int32")}


def batch(lens, n_in=5, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, t = len(lens), max(lens)
    time = Dim("time", seq_lens=torch.tensor(lens))
    mask = time.mask()
    x = torch.randn(b, t, n_in, generator=g) * mask[..., None]
    y = torch.randint(0, n_classes, (b, t), generator=g) * mask
    batch_dim = Dim("batch", size=b)
    return {
        "data": Tensor(x, (batch_dim, time, Dim("f", size=n_in))),
        "classes": Tensor(y, (batch_dim, time), sparse_dim=Dim("v", size=n_classes)),
    }


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            {"output": {"class": "lineer", "n_out": 3}},
            r"network.layers.output.class: unknown layer class 'lineer'",
        ),
        (
            {"output": {"class": "linear", "n_out": 3, "activaton": "relu"}},
            r"network.layers.output: unknown option 'activaton'",
        ),
        ({"output": {"class": "linear", "n_out": "many"}}, r"network.layers.output.n_out: .*"),
        (
            {"output": {"class": "softmax", "from": "hidden", "loss": "ce"}},
            r"network.layers.output: from: unknown layer 'hidden'",
        ),
        (
            {
                "a": {"class": "copy", "from": "b"},
                "b": {"class": "copy", "from": "a"},
                "output": {"class": "copy", "from": "a"},
            },
            r"network.layers.a: cycle in 'from': a -> b -> a",
        ),
        (
            {"output": {"class": "softmax", "from": "data:labels", "loss": "ce"}},
            r"from: unknown data key 'labels'",
        ),
        ({"output": {"class": "softmax", "n_out": 4, "loss": "ce"}}, None),  # shape mismatch: found when run
        (
            {
                "output": {"class": "linear", "n_out": 3},
                "x": {"class": "rec", "unit": "lstmm", "n_out": 2, "is_output_layer": True},
            },
            r"network.layers.x: \(class rec\) unit: unknown 'lstmm'; known: lstm, nativelstm, standardlstm",
        ),
        ({"output": {"class": "softmax", "loss": "cee"}}, r"network.layers.output: loss: unknown 'cee'"),
        (
            {
                "output": {"class": "combine", "kind": "add", "from": ["a", "data"]},
                "a": {"class": "linear", "n_out": 2},
            },
            r"network.layers.output: \(class combine\) sources must have equal shapes",
        ),
        ({"hidden": {"class": "linear", "n_out": 3}}, r"network.layers: no output layer"),
    ],
)
def test_construction_errors_name_the_layer(layers, message):
    if message is None:  # n_out 4 vs 3 classes is caught by the loss on the first batch
        net = Network(layers, EXTERN)
        with pytest.raises(
            NetworkError, match=r"network.layers.output: n_out 4 does not match the target's 3"
        ):
            data = batch([3, 2])
            net.losses(net(data), data)
        return
    with pytest.raises(ConfigError, match=message):
        Network(layers, EXTERN)


def test_from_defaults_and_comments():
    net = Network(
        {
            "#note": "ignored",
            "h": {"class": "linear", "n_out": 4, "activation": "tanh"},
            "output": {"class": "softmax", "from": ["h", "data"], "loss": "ce"},
        },
        EXTERN,
    )
    assert list(net.layers) == ["h", "output"]
    assert net.sources["h"] == ["data"] and net.layers["output"].linear.in_features == 9
    assert net.layers["output"].opts.n_out == 3  # from the target's number of classes
    assert "layers.output.linear.weight" in net.state_dict()


def test_unreachable_layer_is_named(caplog):
    layers = {
        "h": {"class": "linear", "n_out": 4},
        "h2": {"class": "no_such_class", "from": "h"},  # not built, so its class is not looked up either
        "output": {"class": "softmax", "from": "data", "loss": "ce"},
    }
    with caplog.at_level("WARNING", logger="seqtrain.network"):
        net = Network(layers, EXTERN)
    assert list(net.layers) == ["output"]
    assert "network.layers: h, h2 not reachable from an output layer" in caplog.text


def reference_lstm(layer, x):
    lstm = torch.nn.LSTM(x.shape[-1], layer.opts.n_out, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(layer.weight_ih)
        lstm.weight_hh_l0.copy_(layer.weight_hh)
        lstm.bias_ih_l0.copy_(layer.bias)
        lstm.bias_hh_l0.zero_()
    return lstm(x)[0]


@pytest.mark.parametrize("unit", ["standardlstm", "lstm"])
def test_blstm_on_padded_batch_equals_each_sequence_alone(unit):
    torch.manual_seed(0)
    net = Network(
        {
            "fw": {"class": "rec", "unit": unit, "n_out": 4, "direction": 1},
            "bw": {"class": "rec", "unit": unit, "n_out": 4, "direction": -1},
            "output": {"class": "copy", "from": ["fw", "bw"]},
        },
        EXTERN,
    )
    lens = [7, 3, 5, 1]
    data = batch(lens)
    out = net(data)["output"].raw
    for i, n in enumerate(lens):
        x = data["data"].raw[i : i + 1, :n]
        fw = reference_lstm(net.layers["fw"], x)
        bw = reference_lstm(net.layers["bw"], x.flip(1)).flip(1)
        torch.testing.assert_close(out[i : i + 1, :n], torch.cat([fw, bw], -1), atol=1e-6, rtol=1e-5)
        assert out[i, n:].abs().sum() == 0  # padding stays zero


def test_gru_backward_on_padded_batch():
    torch.manual_seed(0)
    net = Network({"output": {"class": "rec", "unit": "gru", "n_out": 3, "direction": -1}}, EXTERN)
    layer = net.layers["output"]
    gru = torch.nn.GRU(5, 3, batch_first=True)
    with torch.no_grad():
        for mine, theirs in [
            ("weight_ih", "weight_ih_l0"),
            ("weight_hh", "weight_hh_l0"),
            ("bias", "bias_ih_l0"),
            ("bias_hh", "bias_hh_l0"),
        ]:
            getattr(gru, theirs).copy_(getattr(layer, mine))
    data = batch([4, 2])
    out = net(data)["output"].raw
    x = data["data"].raw[1:, :2]
    torch.testing.assert_close(out[1:, :2], gru(x.flip(1))[0].flip(1), atol=1e-6, rtol=1e-5)


def test_loss_semantics_as_returnn():
    torch.manual_seed(0)
    layers = {
        "output": {"class": "softmax", "loss": "ce", "loss_scale": 0.5, "loss_opts": {"label_smoothing": 0.1}}
    }
    net = Network(layers, EXTERN)
    data = batch([4, 2, 3])
    out = net(data)
    loss = net.losses(out, data)["output"]
    mask = data["data"].mask()
    logits = out["output"].logits[mask]
    target = data["classes"].raw[mask]
    expected = F.cross_entropy(logits, target, reduction="sum", label_smoothing=0.1)
    torch.testing.assert_close(loss.loss_sum, expected)
    assert int(loss.num_frames) == 9
    assert int(loss.errors) == int((logits.argmax(-1) != target).sum())
    torch.testing.assert_close(net.total_loss({"output": loss}), 0.5 * expected)  # frame sum, scaled
    net.layers["output"].opts.use_normalized_loss = True
    torch.testing.assert_close(net.total_loss({"output": loss}), 0.5 * expected / 9)


def test_mse_and_reduce_and_combine():
    net = Network(
        {
            "sum": {"class": "reduce", "mode": "sum", "axis": "time", "is_output_layer": True},
            "twice": {"class": "combine", "kind": "add", "from": ["data", "data"]},
            "output": {"class": "copy", "from": "twice", "loss": "mse", "target": "data"},
            "const": {"class": "constant", "value": 2.5, "is_output_layer": True},
        },
        {"data": DataSpec(5)},
    )
    data = batch([3, 1])
    data.pop("classes")
    out = net(data)
    x = data["data"].raw
    torch.testing.assert_close(out["sum"].raw, x.sum(1))
    loss = net.losses(out, data)["output"]
    torch.testing.assert_close(loss.loss_sum, (x * x).sum())  # (2x - x)^2 summed over real frames
    assert int(loss.num_frames) == 4 and loss.errors is None
    assert out["const"].raw.tolist() == [[2.5], [2.5]]


def test_dropout_only_in_training():
    net = Network({"output": {"class": "copy", "dropout": 0.5}}, EXTERN)
    data = batch([50])
    net.eval()
    assert torch.equal(net(data)["output"].raw, data["data"].raw)
    net.train()
    assert (net(data)["output"].raw == 0).float().mean() > 0.3


def test_l2_adds_squared_weights_to_the_loss():
    net = Network({"output": {"class": "softmax", "loss": "ce", "L2": 0.01}}, EXTERN)
    data = batch([3])
    losses = net.losses(net(data), data)
    weights = sum((p * p).sum() for p in net.layers["output"].parameters())
    torch.testing.assert_close(net.total_loss(losses), losses["output"].loss_sum + 0.01 * weights)


def test_nativelstm_and_standardlstm_checkpoints_convert():
    def net(unit):
        layers = {
            "fw": {"class": "rec", "unit": unit, "n_out": 4},
            "bw": {"class": "rec", "unit": unit, "n_out": 4, "direction": -1},
            "output": {"class": "copy", "from": ["fw", "bw"]},
        }
        return Network(layers, EXTERN)

    torch.manual_seed(0)
    native, standard = net("nativelstm"), net("standardlstm")
    standard.load_state_dict(native.state_dict())
    data = batch([6, 2, 4])
    torch.testing.assert_close(native(data)["output"].raw, standard(data)["output"].raw, atol=1e-6, rtol=1e-5)


def test_rec_layer_runs_bf16_gemms_under_bf16_autocast():
    from seqtrain import ops

    if not ops.native_available() or not ops.lstm_bf16_available(torch.zeros(1), 16):
        pytest.skip("no bf16 LSTM kernel here (needs a CPU with AMX)")
    layers = {"output": {"class": "rec", "unit": "nativelstm", "n_out": 16, "direction": -1}}
    torch.manual_seed(0)
    net, data = Network(layers, EXTERN), batch([6, 2, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(data)["output"].raw
    layer = net.layers["output"]
    x, lens = data["data"].raw.transpose(0, 1), data["data"].time_dim.seq_lens
    args = (x, layer.weight_ih, layer.weight_hh, layer.bias, lens)
    expected = ops.lstm(*args, direction=-1, bf16=True)[0].transpose(0, 1)
    torch.testing.assert_close(y, expected, atol=0, rtol=0)
    assert not torch.equal(y, ops.lstm(*args, direction=-1)[0].transpose(0, 1))  # not the float32 kernel


def test_tied_embeddings_share_one_matrix():
    extern = {"data": DataSpec(7, sparse=True), "classes": DataSpec(7, sparse=True)}
    layers = {
        "embed": {"class": "linear", "n_out": 4, "with_bias": False},
        "output": {"class": "softmax", "from": "embed", "loss": "ce", "reuse_params": "embed"},
    }
    net = Network(layers, extern)
    assert net.layers["output"].linear.weight is net.layers["embed"].embedding.weight
    assert net.num_params() == 7 * 4 + 7  # one matrix and the softmax bias
    with pytest.raises(
        NetworkError, match=r"network.layers.output: \(class softmax\) reuse_params: weight shape"
    ):
        hidden = {"class": "linear", "n_out": 6, "from": "embed"}
        Network({**layers, "hidden": hidden, "output": {**layers["output"], "from": "hidden"}}, extern)


def test_reverse_padded_reverses_within_lengths_and_its_gradient_is_exact():
    from seqtrain.layers.rec import reverse_padded

    x = torch.arange(8.0).view(2, 4, 1)
    lens = torch.tensor([4, 2])
    assert reverse_padded(x, lens)[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reverse_padded(t, torch.tensor([5, 1, 3])), (x,))
    # a time-major view (as torch's LSTM returns) is reversed in its own layout, to the same values
    lens = torch.tensor([5, 1, 3])
    expect = torch.stack([torch.cat([s[:n].flip(0), s[n:]]) for s, n in zip(x.detach(), lens.tolist())])
    x_tm = x.detach().transpose(0, 1).contiguous().transpose(0, 1)
    out = reverse_padded(x_tm, lens)
    assert torch.equal(out, expect) and out.transpose(0, 1).is_contiguous()


@pytest.mark.parametrize("unit", ["standardlstm", "gru", "lstm"])
def test_forward_piece_continues_each_sequence_where_the_last_piece_ended(unit):
    torch.manual_seed(0)
    layers = {
        "proj": {"class": "linear", "n_out": 6, "activation": "tanh"},
        "rec": {"class": "rec", "unit": unit, "n_out": 4, "from": "proj"},
        "output": {"class": "combine", "kind": "add", "from": ["rec", "rec"]},
    }
    net = Network(layers, EXTERN).eval()
    lens, split = [5, 3, 4], [2, 3, 0]  # per sequence: frames in the first piece (the rest in the second)
    whole = batch(lens)
    expected = net(whole)["output"].raw
    x = whole["data"].raw
    state, got = {}, []
    for part in (lambda i: slice(0, split[i]), lambda i: slice(split[i], lens[i])):
        rows = [x[i, part(i)] for i in range(len(lens))]
        piece_lens = [len(r) for r in rows]
        time = Dim("time", seq_lens=torch.tensor(piece_lens))
        raw = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        piece = {"data": Tensor(raw, (Dim("batch", size=3), time, Dim("f", size=5)))}
        out, state = net.forward_piece(piece, state)
        assert set(state) == {"rec"}
        got.append([out["output"].raw[i, :n] for i, n in enumerate(piece_lens)])
    for i, n in enumerate(lens):
        torch.testing.assert_close(torch.cat([got[0][i], got[1][i]]), expected[i, :n], atol=1e-6, rtol=1e-5)


def test_forward_piece_refuses_layers_that_need_whole_sequences():
    net = Network({"output": {"class": "rec", "unit": "gru", "n_out": 4, "direction": -1}}, EXTERN)
    assert net.piece_blocker() == "output"
    with pytest.raises(NetworkError, match="output.*direction -1"):
        net.forward_piece(batch([2]), {})
    net = Network({"output": {"class": "reduce", "mode": "max", "from": "data"}}, EXTERN)
    with pytest.raises(NetworkError, match="output.*other frames"):
        net.forward_piece(batch([2]), {})


def run_with_and_without(net: Network, attr: str, data: dict, watch: str) -> list[tuple]:
    """(output `watch`, loss, parameter gradients) with net.<attr> (the rec groups or chains) as built and
    with it emptied, both on 2 threads (where the kernel runs a group's calls concurrently) and with the
    same dropout masks."""
    from seqtrain import ops

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert not ops.native_available() or ops.group_runs_concurrently(2, data["data"].raw)
        runs = []
        for value in (getattr(net, attr), {}):
            setattr(net, attr, value)
            torch.manual_seed(1)
            outputs = net(data)
            loss = net.total_loss(net.losses(outputs, data))
            runs.append((outputs[watch].raw, loss, torch.autograd.grad(loss, list(net.parameters()))))
    finally:
        torch.set_num_threads(before)
    for together, alone in zip(*runs):
        torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    return runs


@pytest.mark.parametrize("training", [True, False], ids=["train (own dropout)", "eval (one shared input)"])
def test_blstm_directions_run_as_one_group_with_the_same_results(training):
    torch.manual_seed(0)
    layers = {
        "fw": {"class": "rec", "unit": "lstm", "n_out": 32, "direction": 1, "dropout": 0.1},
        "bw": {"class": "rec", "unit": "lstm", "n_out": 32, "direction": -1, "dropout": 0.1},
        "gru": {"class": "rec", "unit": "gru", "n_out": 4},  # torch's unit: not grouped
        "output": {"class": "softmax", "from": ["fw", "bw", "gru"], "n_out": 3, "loss": "ce"},
    }
    net = Network(layers, EXTERN).train(training)
    assert net.rec_groups == {"fw": ["fw", "bw"]}
    run_with_and_without(net, "rec_groups", batch([7, 3, 5]), "output")


# 37 frames: 8 pieces of 5 (the last 2); 17 frames: 6 pieces of 3 (the last 2); some sequences end early
@pytest.mark.parametrize("lens", [[37, 30, 4, 1, 20], [17, 2, 9]], ids=["T37", "T17"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_stacked_lstms_pipelined_over_time_give_the_same_results(training, lens):
    """An LSTM LM's stack: layer 2 runs piece c while layer 1 runs piece c + 1, from carried states."""
    torch.manual_seed(0)
    layers = {
        "proj": {"class": "linear", "n_out": 8},
        "lstm1": {"class": "rec", "unit": "lstm", "n_out": 32, "from": "proj", "dropout": 0.2},
        "lstm2": {"class": "rec", "unit": "lstm", "n_out": 32, "from": "lstm1", "dropout": 0.2},
        "lstm3": {"class": "rec", "unit": "lstm", "n_out": 16, "from": "lstm2"},
        "output": {"class": "softmax", "from": ["lstm3", "lstm1"], "n_out": 3, "loss": "ce"},
    }
    net = Network(layers, EXTERN).train(training)
    assert net.rec_chains == {"lstm1": ["lstm1", "lstm2", "lstm3"]}
    runs = run_with_and_without(net, "rec_chains", batch(lens), "lstm3")
    assert runs[0][0][1, lens[1] :].abs().sum() == 0  # padding stays zero

"""NetworkLM: a seqtrain LM scoring the acoustic model's labels by string, its state carried per prefix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqtrain.network_lm import NetworkLM


def test_network_lm_scores_next_labels_by_string():
    from seqtrain.datasets.base import DataSpec
    from seqtrain.network import Network

    lm_vocab = ["<s>", "</s>", "<unk>", "b", "a"]
    spec = DataSpec(len(lm_vocab), sparse=True, vocab=lm_vocab)
    torch.manual_seed(0)
    net = Network(
        {"emb": {"class": "linear", "n_out": 4}, "output": {"class": "softmax", "from": "emb", "n_out": 5}},
        {"data": spec, "classes": spec},
    )
    lm = NetworkLM(net, ["a", "b", "c"])  # "c" is unknown to the LM
    scores = lm([(), (0, 1)])
    full = lm.token_log_probs([(), (0, 1)])
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores[:, 0], full[:, 4])  # "a" is LM token 4
    np.testing.assert_allclose(scores[:, 2], full[:, 2])  # "c" scores as <unk>
    np.testing.assert_allclose(np.exp(full).sum(1), 1.0, rtol=1e-5)
    assert lm.end_log_probs([()]).shape == (1,)


def _rec_lm(unit: str, direction: int = 1):
    from seqtrain.datasets.base import DataSpec
    from seqtrain.network import Network

    lm_vocab = ["<s>", "</s>", "<unk>", "a", "b", "c"]
    spec = DataSpec(len(lm_vocab), sparse=True, vocab=lm_vocab)
    torch.manual_seed(0)
    layers = {
        "emb": {"class": "linear", "n_out": 8},
        "lstm1": {"class": "rec", "unit": unit, "n_out": 16, "from": "emb", "direction": direction},
        "lstm2": {"class": "rec", "unit": unit, "n_out": 16, "from": ["lstm1", "emb"]},
        "output": {"class": "softmax", "from": "lstm2", "n_out": len(lm_vocab)},
    }
    return Network(layers, {"data": spec, "classes": spec})


def _full_prefix_log_probs(net, lm_ids: list[list[int]]) -> np.ndarray:
    """Independent reference: the network over each whole <s> + prefix, one sequence at a time."""
    from seqtrain.tensor import Dim, Tensor

    rows = []
    for ids in lm_ids:
        seq = torch.tensor([[0, *ids]])
        time = Dim("time:data", seq_lens=torch.tensor([seq.shape[1]]))
        data = Tensor(seq, (Dim("batch", size=1), time), Dim("vocab:data", size=6))
        with torch.no_grad():
            out = net.eval()({"data": data})["output"]
        rows.append(torch.log_softmax(out.logits[0, -1].double(), -1).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("unit", ["standardlstm", "gru", "nativelstm"])
def test_network_lm_carries_state_per_prefix(unit):
    if unit == "nativelstm":
        from seqtrain import ops

        if not ops.native_available():
            pytest.skip("seqtrain's kernels are not built here")
    net = _rec_lm(unit)
    lm = NetworkLM(net, ["c", "a", "b"])  # AM label i is LM token 5, 3, 4
    assert lm.incremental
    to_lm = {0: 5, 1: 3, 2: 4}
    # as beam search asks: the root, then one-label extensions, then a deep prefix none of whose
    # ancestors was scored, a repeat, and extensions of both
    calls = [
        [()],
        [(0,), (1,), (2,)],
        [(1, 2), (0, 0)],
        [(2, 2, 1, 0, 1)],
        [(1, 2), (2, 2, 1, 0, 1, 1), (1, 2, 0)],
    ]
    for prefixes in calls:
        got = lm.token_log_probs(prefixes)
        want = _full_prefix_log_probs(net, [[to_lm[c] for c in p] for p in prefixes])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_network_lm_reruns_prefixes_where_a_layer_needs_whole_sequences():
    net = _rec_lm("standardlstm", direction=-1)
    assert net.piece_blocker() == "lstm1"
    lm = NetworkLM(net, ["c", "a", "b"])
    assert not lm.incremental
    got = lm.token_log_probs([(0, 1), ()])
    np.testing.assert_allclose(got, _full_prefix_log_probs(net, [[5, 3], []]), rtol=1e-5, atol=1e-6)


def test_network_lm_cache_is_bounded():
    lm = NetworkLM(_rec_lm("standardlstm"), ["c", "a", "b"], cache_size=3)
    for n in range(1, 6):
        lm.token_log_probs([(1,) * n])
    assert len(lm._cache) == 3
    np.testing.assert_allclose(  # an evicted ancestor is recomputed from the longest one left (or the start)
        lm.token_log_probs([(1, 1)]), _full_prefix_log_probs(lm.network, [[3, 3]]), rtol=1e-5, atol=1e-6
    )

"""search: greedy and prefix beam search against brute force over all alignments, LM fusion, text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from seqtrain.search import (
    beam_search_batch,
    ctc_prefix_beam_search,
    greedy_decode,
    greedy_labels,
    labels_to_text,
)


def collapse(path, blank):
    out = [k for i, k in enumerate(path) if k != blank and (i == 0 or k != path[i - 1])]
    return tuple(out)


def brute_force(probs: np.ndarray, blank: int) -> dict[tuple, float]:
    """P(labels) = sum over all alignments (every path of T frames) that collapse to them."""
    totals: dict[tuple, float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=probs.shape[0]):
        p = float(np.prod(probs[np.arange(len(path)), path]))
        key = collapse(path, blank)
        totals[key] = totals.get(key, 0.0) + p
    return totals


def test_beam_beats_greedy_where_alignments_add_up():
    # two frames, p(blank)=0.6, p(a)=0.4: the best path is blank blank (""), 0.36, but
    # P("a") = 0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64
    lp = torch.log(torch.tensor([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy_decode(lp[None], torch.tensor([2]), blank=0) == [[]]
    best = ctc_prefix_beam_search(lp, beam_size=4, blank=0)[0]
    assert best.labels == (1,)
    assert best.am_score == pytest.approx(np.log(0.64))


@pytest.mark.parametrize("seed", range(4))
def test_beam_search_equals_brute_force_on_tiny_t(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3) * 0.7, size=5)  # T=5, C=3 (blank 2): 243 paths
    truth = brute_force(probs, blank=2)
    hyps = ctc_prefix_beam_search(np.log(probs), beam_size=100, blank=2)
    best_labels, best_p = max(truth.items(), key=lambda kv: kv[1])
    assert hyps[0].labels == best_labels
    assert hyps[0].am_score == pytest.approx(np.log(best_p))
    for h in hyps:  # every surviving prefix carries its exact probability
        assert h.am_score == pytest.approx(np.log(truth[h.labels]))
    greedy = greedy_decode(torch.tensor(np.log(probs))[None], torch.tensor([5]), blank=2)[0]
    assert hyps[0].am_score >= np.log(truth[tuple(greedy)]) - 1e-12


def test_greedy_labels_batch_respects_lengths():
    # frames: a a blank a b | padding b
    best = torch.tensor([[1, 1, 0, 1, 2, 2], [2, 2, 0, 0, 0, 0]])
    lp = torch.nn.functional.one_hot(best, 3).float().log()
    labels, lens = greedy_labels(lp, torch.tensor([5, 2]), blank=0)
    assert lens.tolist() == [3, 1]
    assert labels[0].tolist() == [1, 1, 2] and labels[1, 0] == 2


def test_lm_fusion_changes_the_winner():
    # acoustically "a" and "b" are equally likely; an LM that prefers "b" decides
    lp = np.log(np.array([[0.1, 0.45, 0.45]]))  # blank 0

    def lm(prefixes):
        return np.log(np.tile([1e-9, 0.2, 0.8], (len(prefixes), 1)))

    plain = ctc_prefix_beam_search(lp, 4, blank=0)
    fused = ctc_prefix_beam_search(lp, 4, blank=0, lm=lm, lm_weight=1.0)
    assert {plain[0].labels, plain[1].labels} == {(1,), (2,)}
    assert fused[0].labels == (2,) and fused[0].lm_score == pytest.approx(np.log(0.8))


def test_lm_at_weight_zero_changes_nothing_even_where_it_rules_labels_out():
    lp = np.log(np.array([[0.1, 0.3, 0.6], [0.5, 0.3, 0.2]]))

    def lm(prefixes):
        with np.errstate(divide="ignore"):
            return np.log(np.tile([0.5, 0.5, 0.0], (len(prefixes), 1)))  # label 2 impossible

    plain = ctc_prefix_beam_search(lp, 4, blank=0)
    zero = ctc_prefix_beam_search(lp, 4, blank=0, lm=lm, lm_weight=0.0, lm_end=lambda p: np.zeros(len(p)))
    assert [(h.labels, h.score) for h in zero] == [(h.labels, h.score) for h in plain]
    assert plain[0].labels == (2,)


def test_token_beam_and_batch():
    lp = torch.log_softmax(torch.randn(2, 6, 4), -1)
    results = beam_search_batch(lp, torch.tensor([6, 3]), beam_size=3, blank=3, token_beam=2)
    assert len(results) == 2 and all(1 <= len(r) <= 3 for r in results)


def test_labels_to_text_chars_and_bpe():
    assert labels_to_text([0, 1, 2, 1, 3], ["H", "I", " ", "!"]) == "HI I!"
    assert labels_to_text([0, 1, 2], ["▁HE", "LLO", "▁WORLD"]) == "HELLO WORLD"


class HashLM:
    """A LabelLM whose next-label log-probs are a fixed random function of the prefix (no blank column)."""

    def __init__(self, labels: int, seed: int):
        self.labels, self.seed = labels, seed

    def __call__(self, prefixes):
        rows = [np.random.default_rng([self.seed, *p]).dirichlet(np.ones(self.labels)) for p in prefixes]
        return np.log(np.array(rows))

    def end(self, prefixes):
        return np.array([-0.1 * len(p) for p in prefixes])


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_search_equals_the_label_by_label_reference(seed):
    from seqtrain.search import WordUnits
    from seqtrain.search_reference import prefix_beam_search

    rng = np.random.default_rng(seed)
    vocab = [" ", "A", "B", "C", "D"]  # blank is class 5, beyond the vocabulary
    lp = np.log(rng.dirichlet(np.ones(6) * 0.5, size=14))
    lm = HashLM(len(vocab), seed)
    for kwargs in [
        {},
        {"beam_size": 3, "token_beam": 2},
        {"lm": lm, "lm_weight": 0.7, "lm_end": lm.end, "length_bonus": 0.4},
        {"lm": lm, "lm_weight": 0.5, "length_bonus": 1.0, "length_units": WordUnits(vocab)},
    ]:
        kwargs = {"beam_size": 6, **kwargs}
        fast = ctc_prefix_beam_search(lp, blank=5, **kwargs)
        slow = prefix_beam_search(lp, blank=5, **kwargs)
        assert [h.labels for h in fast] == [h.labels for h in slow]
        for a, b in zip(fast, slow):
            assert (a.score, a.am_score, a.lm_score) == pytest.approx((b.score, b.am_score, b.lm_score))

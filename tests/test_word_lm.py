"""WordLM: a word LM's scores at the word ends of character/BPE prefixes, against a hand-written bigram LM."""

from __future__ import annotations

import numpy as np
import pytest

from seqtrain.errors import ConfigError
from seqtrain.search import WordUnits, ctc_prefix_beam_search
from seqtrain.word_lm import PrefixMass, WordLM

LM_VOCAB = ["<s>", "</s>", "<unk>", "the", "cat", "do", "n't"]
CHARS = [" ", "'", *(chr(c) for c in range(ord("A"), ord("Z") + 1))]  # LibriSpeech's character labels
# P(next | last token): a bigram table, rows normalised (columns as LM_VOCAB)
BIGRAM = {
    "<s>": [0, 0.05, 0.15, 0.4, 0.1, 0.3, 0],
    "the": [0, 0.1, 0.2, 0, 0.7, 0, 0],
    "cat": [0, 0.6, 0.1, 0.3, 0, 0, 0],
    "do": [0, 0.2, 0.1, 0.1, 0.1, 0, 0.5],
    "n't": [0, 0.5, 0.2, 0.3, 0, 0, 0],
    "<unk>": [0, 0.4, 0.2, 0.2, 0.1, 0.1, 0],
}


class BigramLM:
    """What WordLM uses of network_lm.NetworkLM: `vocab`, token_log_probs over LM-token prefixes, `end`."""

    end = LM_VOCAB.index("</s>")

    def __init__(self, vocab=LM_VOCAB):
        self.vocab, self.queries = vocab, 0

    def token_log_probs(self, prefixes):
        self.queries += 1
        last = [LM_VOCAB[p[-1]] if p else "<s>" for p in prefixes]
        with np.errstate(divide="ignore"):
            return np.log(np.array([BIGRAM[t] for t in last]))


def p(last: str, nxt: str) -> float:
    return float(np.log(BIGRAM[last][LM_VOCAB.index(nxt)]))


def labels(text: str) -> tuple[int, ...]:
    return tuple(CHARS.index(c) for c in text)


def word_lm(**kwargs) -> WordLM:
    """Scores at word ends only, unless look_ahead=True is passed."""
    return WordLM(BigramLM(), CHARS, **{"look_ahead": False, **kwargs})


def test_boundary_labels_score_the_finished_word():
    lm = word_lm(oov_penalty=2.0)
    rows = lm([labels("THE CAT"), labels("THE CA"), labels("THE "), labels("")])
    space = CHARS.index(" ")
    inside = np.delete(rows, space, axis=1)
    assert rows.shape == (4, len(CHARS)) and not inside.any()
    np.testing.assert_allclose(
        rows[:, space],
        [p("the", "cat"), p("the", "<unk>") - 2.0, 0.0, 0.0],  # "CA" is no word the LM knows
    )


def test_end_scores_the_last_word_and_end_of_sentence():
    lm = word_lm()
    ends = lm.end_log_probs([labels("THE CAT"), labels("DON'T"), labels("THE ")])
    np.testing.assert_allclose(
        ends,
        [
            p("the", "cat") + p("cat", "</s>"),
            p("<s>", "do") + p("do", "n't") + p("n't", "</s>"),  # PTB's split clitic
            p("the", "</s>"),
        ],
    )
    assert lm.tokens("DON'T") == ([5, 6], 0.0) and lm.tokens("Cat") == ([4], 0.0)


def test_queries_of_a_batch_go_to_the_lm_at_once():
    lm = word_lm()
    lm([labels("THE CAT"), labels("DO"), labels("THE DOG")])
    assert lm.lm.queries == 1


def test_without_unk_unknown_words_are_ruled_out():
    vocab = [t for t in LM_VOCAB if t != "<unk>"]
    for look_ahead in (False, True):
        lm = WordLM(BigramLM(vocab), CHARS, look_ahead=look_ahead)
        assert lm.end_log_probs([labels("DOG")])[0] == -np.inf


def test_bpe_pieces_starting_a_word_are_boundaries():
    pieces = ["▁THE", "▁CA", "T", "▁DO"]
    lm = WordLM(BigramLM(), pieces, look_ahead=False)
    assert lm.split((0, 1, 2)) == (["THE"], "CAT")
    row = lm([(0, 1, 2)])[0]
    np.testing.assert_allclose(row, [p("the", "cat"), p("the", "cat"), 0.0, p("the", "cat")])


def test_word_units_count_words_where_the_word_lm_scores_them():
    units = WordUnits(CHARS)

    def step(prefix):  # units the prefix's last label completes
        return units.steps(prefix[:-1])[prefix[-1]]

    # a word counts at the boundary after it, or at the end: "THE  CAT" has two, spaces alone none
    assert [step(labels("THE  CAT")[: n + 1]) for n in range(8)] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert units.end(labels("THE  CAT")) == 1
    assert units.end(labels("THE ")) == 0 and step(labels(" ")) == 0 and units.end(()) == 0
    units = WordUnits(["▁THE", "▁CA", "T", "▁", "'S"])
    assert [step((0, 1, 2, 3, 0)[: n + 1]) for n in range(5)] == [0, 1, 0, 1, 0]
    assert units.end((0, 3)) == 0 and units.end((0, 3, 4)) == 1


def frames(*columns: dict[str, float]) -> tuple[np.ndarray, int]:
    """Log-probs over CHARS + blank ("-"), one frame per dict of label probabilities (the rest share 1e-4)."""
    am = [*CHARS, "-"]
    probs = np.full((len(columns), len(am)), 1e-4)
    for t, column in enumerate(columns):
        for label, prob in column.items():
            probs[t, am.index(label)] = prob
    return np.log(probs / probs.sum(1, keepdims=True)), len(am) - 1


def test_length_bonus_per_word_in_the_search():
    units = WordUnits([*CHARS, "-"])
    # "A" against "AB": the label bonus favours the longer, the word bonus neither (both one word)
    lp, blank = frames({"A": 1.0}, {"B": 0.4, "-": 0.6})
    by_label = ctc_prefix_beam_search(lp, 8, blank, length_bonus=1.0)
    by_word = ctc_prefix_beam_search(lp, 8, blank, length_bonus=1.0, length_units=units)
    assert by_label[0].labels == labels("AB") and by_word[0].labels == labels("A")
    bonus = {h.labels: h.score - h.am_score for h in by_word}
    assert [bonus[labels(text)] for text in ("A", "AB", "A ")] == pytest.approx([1.0, 1.0, 1.0])
    # "A B" against "AB": two words against one, each counted once (the space's and the end's)
    lp, blank = frames({"A": 1.0}, {" ": 0.4, "-": 0.6}, {"B": 1.0})
    hyps = ctc_prefix_beam_search(lp, 8, blank, length_bonus=1.0, length_units=units)
    bonus = {h.labels: h.score - h.am_score for h in hyps}
    assert hyps[0].labels == labels("A B")
    assert [bonus[labels("A B")], bonus[labels("AB")]] == pytest.approx([2.0, 1.0])
    # and with lm_weight 0 the per-word bonus still counts (it is the search's, not the LM's)
    fused = ctc_prefix_beam_search(
        lp, 8, blank, lm=word_lm(), lm_weight=0.0, length_bonus=1.0, length_units=units
    )
    assert [h.labels for h in fused[:2]] == [h.labels for h in hyps[:2]]


def test_look_ahead_scores_partial_words_by_the_words_they_start():
    lm = word_lm(oov_penalty=2.0, look_ahead=True)
    unk = p("the", "<unk>") - 2.0
    row = lm([labels("THE C")])[0]
    s_c = p("the", "cat")  # S("C"): cat is the only word starting with c
    assert row[CHARS.index("A")] == pytest.approx(0.0)  # S("CA") = S("C")
    assert row[CHARS.index("X")] == pytest.approx(unk - s_c)  # no word starts with "cx": an unknown word's
    assert row[CHARS.index(" ")] == pytest.approx(unk - s_c)  # "C" is no word: <unk>, less what C had scored
    first = lm([()])[0]
    assert first[CHARS.index("T")] == pytest.approx(p("<s>", "the"))
    assert first[CHARS.index("D")] == pytest.approx(p("<s>", "do"))
    assert first[CHARS.index(" ")] == 0.0
    # the words starting with "" after "DO ": all of them; after "DO" the sum over do's continuations
    assert lm([labels("DO")])[0][CHARS.index(" ")] == pytest.approx(0.0)  # S("DO") = log P(do) = the word's


def hypothesis_score(lm: WordLM, prefix: tuple[int, ...]) -> float:
    """The LM score the search gives a whole hypothesis: each label's score after its prefix, and the end."""
    steps = sum(lm([prefix[:k]])[0][prefix[k]] for k in range(len(prefix)))
    return steps + lm.end_log_probs([prefix])[0]


@pytest.mark.parametrize("text", ["THE CAT", "THE CAX", "DON'T", "CAT THE ", "DO DO"])
def test_look_ahead_leaves_the_score_of_a_whole_hypothesis(text):
    ahead, plain = word_lm(oov_penalty=1.5, look_ahead=True), word_lm(oov_penalty=1.5)
    assert hypothesis_score(ahead, labels(text)) == pytest.approx(hypothesis_score(plain, labels(text)))


def test_look_ahead_with_bpe_pieces_that_start_words():
    pieces = ["▁THE", "▁CA", "T", "▁DO", "N'T", "▁"]
    ahead = WordLM(BigramLM(), pieces, look_ahead=True)
    plain = WordLM(BigramLM(), pieces, look_ahead=False)
    # "▁CA" after "▁THE" ends "the" and starts a word with "ca": + S("ca" | the) = log P(cat | the)
    row = ahead([(0,)])[0]
    assert row[1] == pytest.approx(p("<s>", "the") - p("<s>", "the") + p("the", "cat"))
    for prefix in [(0, 1, 2), (3, 4), (0, 5, 1, 2, 5)]:
        assert hypothesis_score(ahead, prefix) == pytest.approx(hypothesis_score(plain, prefix))


def test_prefix_mass_sums_the_words_a_string_starts():
    mass = PrefixMass(["<s>", "an", "and", "Ant", "b", "</s>"])
    lp = np.log(np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.0]) + 1e-300)
    assert mass((), lp, "an") == pytest.approx(np.log(0.6))  # an, and, Ant (case-insensitive)
    assert mass((), lp, "AND") == pytest.approx(np.log(0.2))
    assert mass((), lp, "c") == -np.inf
    tiny = np.log(np.array([0.0, 1e-15, 1e-15, 0.5, 0.5, 0.0]) + 1e-300)
    assert mass((1,), tiny, "and") == pytest.approx(np.log(1e-15))  # summed directly: no cancellation


def test_labels_without_word_boundaries_are_an_error():
    with pytest.raises(ConfigError, match="lm_unit=word: the acoustic model's labels mark no word boundary"):
        WordLM(BigramLM(), ["A", "B"])


@pytest.mark.parametrize("look_ahead", [False, True])
def test_word_lm_decides_between_acoustically_equal_spellings(look_ahead):
    # frames: C or K (equally likely), then A, then T; blank is the last class
    am = [*CHARS, "<b>"]
    blank = len(am) - 1
    probs = np.full((3, len(am)), 1e-4)
    probs[0, CHARS.index("C")] = probs[0, CHARS.index("K")] = 0.5
    probs[1, CHARS.index("A")] = probs[2, CHARS.index("T")] = 1.0
    lp = np.log(probs / probs.sum(1, keepdims=True))
    plain = ctc_prefix_beam_search(lp, 4, blank)
    assert {plain[0].labels, plain[1].labels} == {labels("CAT"), labels("KAT")}
    lm = word_lm(oov_penalty=1.0, look_ahead=look_ahead)
    fused = ctc_prefix_beam_search(lp, 4, blank, lm=lm, lm_weight=1.0, lm_end=lm.end_log_probs)
    assert fused[0].labels == labels("CAT")
    assert fused[0].lm_score == pytest.approx(p("<s>", "cat") + p("cat", "</s>"))

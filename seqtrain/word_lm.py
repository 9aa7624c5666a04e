"""A word-level LM for shallow fusion with character (or BPE) CTC.

The search extends prefixes label by label (search.LabelLM), while a word LM scores whole words. The word
boundaries (the space label, or a BPE piece that starts with "▁") score log P(word just finished | the words
before), and the end of the hypothesis scores its last word and </s> (Hannun et al. 2014, "First-pass large
vocabulary continuous speech recognition using bi-directional recurrent DNNs", sec. 3).

Inside a word, with `look_ahead` (Hori et al. 2018, "End-to-end speech recognition with word-based RNN
language models"), a partial word u scores S(u) = log of the LM probability of all its words that start
with u, each label the change in S; the word boundary then scores log P(u) - S(u). The scores of a whole
hypothesis are the same with and without look-ahead; what changes is that partial words are ranked by how
well they can end, so the beam keeps the ones that lead to likely words. Without look-ahead labels inside a
word score 0.

Words map to the LM's tokens by exact string, else lower or upper case; PTB's split clitics (`do n't`,
`company 's`) are split off the same way. A word the LM does not know scores as its <unk> minus
`oov_penalty` (which keeps misspellings from passing as rare words), and so does a partial word that no LM
word starts with; an LM without <unk> rules such words out. The search's length bonus counts words
(`length_units`, Hannun's β: without it the search prefers to run words together, each merged word one
<unk> instead of several LM words).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from seqtrain.errors import ConfigError
from seqtrain.search import BPE_BOUNDARY, NEG_INF, Prefix, WordUnits, word_text

CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m", "'")  # PTB's tokenization, longest first
SPECIAL = ("<s>", "</s>", "<unk>")


class PrefixMass:
    """log Σ P(w | context) over the LM tokens w that start with a string, case-insensitive: the tokens
    sorted once, so the words starting with a string are one range, summed from a cumulative table per
    context."""

    def __init__(self, vocab: Sequence[str], cache_size: int = 256):
        keyed = sorted((token.lower(), i) for i, token in enumerate(vocab) if token not in SPECIAL)
        self.keys = [key for key, _ in keyed]
        self.order = np.array([i for _, i in keyed], dtype=np.int64)
        self._ranges: dict[str, tuple[int, int]] = {}
        self._tables: OrderedDict[Prefix, np.ndarray] = OrderedDict()  # context -> cumulative P, LRU
        self._cache_size = cache_size

    def __call__(self, context: Prefix, log_probs: np.ndarray, text: str) -> float:
        lo, hi = self._range(text.lower())
        if lo == hi:
            return NEG_INF
        cum = self._table(context, log_probs)
        mass = cum[hi] - cum[lo]
        if mass > 1e-9 * cum[-1]:
            return float(np.log(mass))
        return float(np.logaddexp.reduce(log_probs[self.order[lo:hi]]))  # the difference would cancel

    def _range(self, text: str) -> tuple[int, int]:
        if text not in self._ranges:
            lo = bisect.bisect_left(self.keys, text)
            self._ranges[text] = (lo, bisect.bisect_left(self.keys, text + "\U0010ffff", lo))
        return self._ranges[text]

    def _table(self, context: Prefix, log_probs: np.ndarray) -> np.ndarray:
        if context not in self._tables:
            self._tables[context] = np.concatenate([[0.0], np.cumsum(np.exp(log_probs[self.order]))])
            while len(self._tables) > self._cache_size:
                self._tables.popitem(last=False)
        self._tables.move_to_end(context)
        return self._tables[context]


class WordLM:
    """`lm`: a network_lm.NetworkLM over the word LM's own vocabulary `lm.vocab` (so its prefixes are LM token
    ids)."""

    def __init__(self, lm, am_vocab: Sequence[str], oov_penalty: float = 0.0, look_ahead: bool = True):
        self.lm = lm
        self.am_vocab = list(am_vocab)
        self.length_units = WordUnits(self.am_vocab)  # the search's length bonus counts words
        self.boundary = self.length_units.boundary
        if not self.boundary.any():
            raise ConfigError(
                "task.search.lm_unit=word: the acoustic model's labels mark no word boundary "
                "(a space label, or BPE pieces starting with '▁')"
            )
        # per label, the text it adds to the word it is in; for a boundary, the text of the word it starts
        self.text = [word_text(label) for label in self.am_vocab]
        self.opens = [c for c, t in enumerate(self.text) if self.boundary[c] and t]  # "▁THE": starts a word
        self.index = {token: i for i, token in enumerate(lm.vocab)}
        self.unknown = self.index.get("<unk>")
        self.oov_penalty = oov_penalty
        self.mass = PrefixMass(lm.vocab) if look_ahead else None
        self._words: dict[str, tuple[list[int], float]] = {}

    def __call__(self, prefixes: list[Prefix]) -> np.ndarray:
        """[N, C]: per label, its LM score after the prefix: the finished word's log-prob at every boundary;
        inside a word 0, or with look-ahead the change of the partial word's S."""
        splits = [self.split(p) for p in prefixes]
        plans = [self._plan(done, partial, end=False) for done, partial in splits]
        contexts = [ctx for ctx, _, _ in plans]
        after = [ctx + tuple(steps) for ctx, steps, _ in plans]  # the context once the word is finished
        extra = (contexts + (after if self.opens else [])) if self.mass else []
        log_probs = self._query(plans, extra)
        here = self._partials(contexts, splits, log_probs)
        rows = np.zeros((len(prefixes), len(self.am_vocab)))
        rows[:, self.boundary] = _less(self._word_scores(plans, log_probs), here)[:, None]
        if self.mass is None:
            return rows
        for row, ((_, partial), ctx) in enumerate(zip(splits, contexts)):
            if here[row] == NEG_INF:  # ruled out already (no <unk>): stays so
                rows[row] = NEG_INF
                continue
            for c in np.flatnonzero(~self.boundary):
                rows[row, c] = self._partial(ctx, partial + self.text[c], log_probs) - here[row]
            for c in self.opens:
                rows[row, c] += self._partial(after[row], self.text[c], log_probs)
        return rows

    def end_log_probs(self, prefixes: list[Prefix]) -> np.ndarray:
        """[N]: log P(last word, </s> | the words before) of each prefix as a whole hypothesis (less its
        partial word's S with look-ahead, which the prefix's labels already scored)."""
        splits = [self.split(p) for p in prefixes]
        plans = [self._plan(done, partial, end=True) for done, partial in splits]
        contexts = [ctx for ctx, _, _ in plans]
        log_probs = self._query(plans, contexts if self.mass else [])
        return _less(self._word_scores(plans, log_probs), self._partials(contexts, splits, log_probs))

    def split(self, prefix: Prefix) -> tuple[list[str], str]:
        """The finished words of a prefix and the word it is in the middle of ("" after a boundary)."""
        words = "".join(self.am_vocab[i] for i in prefix).replace(BPE_BOUNDARY, " ").split(" ")
        return [w for w in words[:-1] if w], words[-1]

    def tokens(self, word: str) -> tuple[list[int], float]:
        """The LM tokens of a word and the penalty its unknown parts cost."""
        if word not in self._words:
            self._words[word] = self._lookup(word)
        return self._words[word]

    def _lookup(self, word: str) -> tuple[list[int], float]:
        token = self._known(word)
        if token is not None:
            return [token], 0.0
        for clitic in CLITICS:
            if len(word) > len(clitic) and word.lower().endswith(clitic):
                tail = self._known(word[-len(clitic) :])
                if tail is not None:
                    stem, penalty = self.tokens(word[: -len(clitic)])
                    return [*stem, tail], penalty
        if self.unknown is None:
            return [], np.inf
        return [self.unknown], self.oov_penalty

    def _known(self, token: str) -> int | None:
        return next((self.index[f] for f in (token, token.lower(), token.upper()) if f in self.index), None)

    def _plan(self, done: list[str], partial: str, end: bool) -> tuple[Prefix, list[int], float]:
        """The LM context of the finished words, the tokens to score after it (the partial word's, and
        </s> if `end`) and the penalty of the partial word's unknown parts."""
        context = tuple(t for w in done for t in self.tokens(w)[0])
        steps, penalty = self.tokens(partial) if partial else ([], 0.0)
        if end and self.lm.end is not None:
            steps = [*steps, self.lm.end]
        return context, steps, penalty

    def _query(self, plans, extra: Iterable[Prefix]) -> dict[Prefix, np.ndarray]:
        """log P(next LM token | context) of every context the plans and `extra` need, in one LM call."""
        needed = [ctx + tuple(steps[:k]) for ctx, steps, _ in plans for k in range(len(steps))]
        unique = list(dict.fromkeys([*needed, *extra]))
        return dict(zip(unique, self.lm.token_log_probs(unique))) if unique else {}

    def _word_scores(self, plans, log_probs: dict[Prefix, np.ndarray]) -> np.ndarray:
        return np.array(
            [
                sum(float(log_probs[ctx + tuple(steps[:k])][t]) for k, t in enumerate(steps)) - penalty
                for ctx, steps, penalty in plans
            ]
        )

    def _partials(self, contexts: list[Prefix], splits, log_probs: dict[Prefix, np.ndarray]) -> np.ndarray:
        """S of each prefix's partial word [N]: what its labels scored already (0 without look-ahead)."""
        if self.mass is None:
            return np.zeros(len(contexts))
        return np.array(
            [self._partial(ctx, partial, log_probs) for ctx, (_, partial) in zip(contexts, splits)]
        )

    def _partial(self, context: Prefix, text: str, log_probs: dict[Prefix, np.ndarray]) -> float:
        """S(text): the log-prob of the LM's words that start with it, 0 for no text; where no word does, that
        of an unknown word."""
        if not text:
            return 0.0
        lp = log_probs[context]
        mass = self.mass(context, lp, text)
        if mass > NEG_INF:
            return mass
        return float(lp[self.unknown]) - self.oov_penalty if self.unknown is not None else NEG_INF


def _less(scores: np.ndarray, here: np.ndarray) -> np.ndarray:
    """scores - here; -inf where here is (a prefix the LM ruled out stays ruled out)."""
    out = np.full_like(scores, NEG_INF)
    alive = here > NEG_INF
    out[alive] = scores[alive] - here[alive]
    return out

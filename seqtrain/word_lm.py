"""A word-level LM for shallow fusion with character (or BPE) CTC, scored where a word ends.

The search extends prefixes label by label (search.LabelLM). A word LM has nothing to say about a label
inside a word, so every label scores 0 except the word boundaries (the space label, or a BPE piece that
starts with "▁"), which score log P(word just finished | the words before), and the end of the hypothesis,
which scores its last word and </s> (Hannun et al. 2014, "First-pass large vocabulary continuous speech
recognition using bi-directional recurrent DNNs", sec. 3). Words map to the LM's tokens by exact string, else
lower or upper case; PTB's split clitics (`do n't`, `company 's`) are split off the same way. A word the LM
does not know scores as its <unk> minus `oov_penalty` (which keeps misspellings from passing as rare
words); an LM without <unk> rules such words out. The search's length bonus then counts words (`length_units`,
Hannun's β: without it the search prefers to run words together, each merged word one <unk> instead of several
LM words).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seqtrain.errors import ConfigError
from seqtrain.search import BPE_BOUNDARY, Prefix, WordUnits

CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m", "'")  # PTB's tokenization, longest first


class WordLM:
    """`lm`: a search.NetworkLM over the word LM's own vocabulary `lm.vocab` (so its prefixes are LM token
    ids)."""

    def __init__(self, lm, am_vocab: Sequence[str], oov_penalty: float = 0.0):
        self.lm = lm
        self.am_vocab = list(am_vocab)
        self.length_units = WordUnits(self.am_vocab)  # for the search's length bonus
        self.boundary = np.array(self.length_units.boundary)
        if not self.boundary.any():
            raise ConfigError(
                "task.search.lm_unit=word: the acoustic model's labels mark no word boundary "
                "(a space label, or BPE pieces starting with '▁')"
            )
        self.index = {token: i for i, token in enumerate(lm.vocab)}
        self.unknown = self.index.get("<unk>")
        self.oov_penalty = oov_penalty
        self._words: dict[str, tuple[list[int], float]] = {}

    def __call__(self, prefixes: list[Prefix]) -> np.ndarray:
        """[N, C]: 0 for labels inside a word, the finished word's log-prob at every boundary label."""
        rows = np.zeros((len(prefixes), len(self.am_vocab)))
        rows[:, self.boundary] = self._completion([self.split(p) for p in prefixes], end=False)[:, None]
        return rows

    def end_log_probs(self, prefixes: list[Prefix]) -> np.ndarray:
        """[N]: log P(last word, </s> | the words before) of each prefix as a whole hypothesis."""
        return self._completion([self.split(p) for p in prefixes], end=True)

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

    def _completion(self, splits: list[tuple[list[str], str]], end: bool) -> np.ndarray:
        """Per prefix, log P of its partial word's tokens (and </s> if `end`) after its finished words; the
        LM queries of all prefixes go to the LM in one call."""
        scores = np.zeros(len(splits))
        queries: list[tuple[int, Prefix, int]] = []  # (row, LM context, token scored after it)
        for row, (done, partial) in enumerate(splits):
            context = [t for w in done for t in self.tokens(w)[0]]
            steps: list[int] = []
            if partial:
                word_tokens, penalty = self.tokens(partial)
                steps += word_tokens
                scores[row] -= penalty
            if end and self.lm.end is not None:
                steps.append(self.lm.end)
            queries += [(row, tuple(context + steps[:k]), t) for k, t in enumerate(steps)]
        if queries:
            log_probs = self.lm.token_log_probs([q[1] for q in queries])
            for (row, _, token), lp in zip(queries, log_probs):
                scores[row] += lp[token]
        return scores

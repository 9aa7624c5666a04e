"""A language model trained by seqtrain as the LabelLM of the CTC prefix beam search (search.py): shallow
fusion over the acoustic model's labels, each new prefix scored from its parent's carried state."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from seqtrain.search import NEG_INF, Prefix, ctc_log_probs
from seqtrain.tensor import Tensor


class NetworkLM:
    """A seqtrain LM (the `lm` dataset's layout: it reads `data` = <s> + tokens and its output layer predicts
    the next token) as a LabelLM over the acoustic model's labels, matched by label string: a character
    LM for character CTC, a BPE LM with the same pieces for BPE CTC. Labels the LM lacks score as its
    unknown symbol, or -inf without one.

    Where every layer runs on pieces of sequences (Network.piece_blocker: frame-local layers and forward
    `rec` layers), a prefix's scores come from its longest scored ancestor's carried state, one token at a
    time in beam search: linear in the prefix length. Other networks rerun over each whole prefix."""

    def __init__(
        self,
        network,
        am_vocab: Sequence[str],
        output_layer: str = "output",
        start: str = "<s>",
        end: str | None = "</s>",
        unknown: str | None = "<unk>",
        cache_size: int = 20_000,
    ):
        self.network = network.eval()
        self.output_layer = output_layer
        self.vocab = lm_vocab = network.extern_data["data"].vocab
        index = {label: i for i, label in enumerate(lm_vocab)}
        fallback = index.get(unknown, -1) if unknown is not None else -1
        self.label_map = np.array([index.get(label, fallback) for label in am_vocab], dtype=np.int64)
        self.start = index[start]
        self.end = index.get(end) if end is not None else None
        self.incremental = network.piece_blocker() is None
        # prefix -> (LM state after <s> + prefix, log P(next LM token | prefix)), least recently used first
        self._cache: OrderedDict[Prefix, tuple[dict, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self.length_units = None  # the search's length bonus counts labels

    def token_log_probs(self, prefixes: list[Prefix]) -> np.ndarray:
        """[N, V_lm] log P(next LM token | <s> + prefix mapped to LM tokens)."""
        if not self.incremental:
            tokens = [[self.start, *self._lm_tokens(p)] for p in prefixes]
            return self._run(tokens, None)[0]
        if () not in self._cache:
            self._store([()], *self._run([[self.start]], [{}]))
        todo = list(dict.fromkeys(p for p in prefixes if p not in self._cache))
        if todo:
            ancestors = [self._longest_cached(p) for p in todo]
            tokens = [self._lm_tokens(p[len(a) :]) for p, a in zip(todo, ancestors)]
            self._store(todo, *self._run(tokens, [self._cache[a][0] for a in ancestors]))
        for p in prefixes:
            self._cache.move_to_end(p)
        result = np.stack([self._cache[p][1] for p in prefixes])
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _lm_tokens(self, labels: Sequence[int]) -> list[int]:
        return self.label_map[list(labels)].clip(0).tolist()

    def _longest_cached(self, prefix: Prefix) -> Prefix:
        for n in range(len(prefix) - 1, 0, -1):
            if prefix[:n] in self._cache:
                return prefix[:n]
        return ()

    def _store(self, prefixes: list[Prefix], log_probs: np.ndarray, states: list[dict]) -> None:
        for prefix, lp, state in zip(prefixes, log_probs, states):
            self._cache[prefix] = (state, lp)

    def _run(self, tokens: list[list[int]], states: list[dict] | None) -> tuple[np.ndarray, list[dict]]:
        """The LM over each token list (from its state, or from the start if states is None): log-probs after
        each list's last token [N, V_lm], and per list the state after it (layer -> tuple of [hidden])."""
        from seqtrain.tensor import Dim

        device = next(self.network.parameters()).device
        lens = torch.tensor([len(t) for t in tokens])
        ids = torch.zeros(len(tokens), int(lens.max()), dtype=torch.long)
        for i, t in enumerate(tokens):
            ids[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        vocab = Dim("vocab:data", size=len(self.network.extern_data["data"].vocab))
        batch, time = Dim("batch", size=len(tokens)), Dim("time:data", seq_lens=lens.to(device))
        data = {"data": Tensor(ids.to(device), (batch, time), vocab)}
        with torch.no_grad():
            if states is None:
                out, new = self.network(data)[self.output_layer], {}
            else:
                state = {
                    name: tuple(torch.stack(parts) for parts in zip(*(s[name] for s in states)))
                    for name in states[0]
                }
                outputs, new = self.network.forward_piece(data, state)
                out = outputs[self.output_layer]
        last = ctc_log_probs(out)[torch.arange(len(tokens)), (lens - 1).to(device)]
        rows = [{name: tuple(x[i] for x in parts) for name, parts in new.items()} for i in range(len(tokens))]
        return last.cpu().numpy().astype(np.float64), rows

    def __call__(self, prefixes: list[Prefix]) -> np.ndarray:
        scores = self.token_log_probs(prefixes)[:, self.label_map.clip(0)]
        scores[:, self.label_map < 0] = NEG_INF
        return scores

    def end_log_probs(self, prefixes: list[Prefix]) -> np.ndarray:
        if self.end is None:
            return np.zeros(len(prefixes))
        return self.token_log_probs(prefixes)[:, self.end]

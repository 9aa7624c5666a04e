"""CTC decoding: greedy (best path), prefix beam search with optional LM shallow fusion, labels to text.

Log-probs are [T, C] per sequence (or [B, T, C] with lengths); `blank` is a class index. The prefix beam
search keeps, per label prefix, the probability of all alignments ending in blank and in a non-blank
(Graves 2012, sec. 7.5 "prefix search decoding"; Hannun et al. 2014, "First-pass large vocabulary continuous
speech recognition using bi-directional recurrent DNNs", algorithm 1). With a large enough beam and no
token pruning it is exact: the best labelling by the sum over all its alignments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from seqtrain.tensor import Tensor

NEG_INF = -np.inf
Prefix = tuple[int, ...]
# next-label log-probs [N, C] over the acoustic model's labels for a batch of prefixes (blank column ignored)
LabelLM = Callable[[list[Prefix]], np.ndarray]


# --- greedy ---


def greedy_labels(
    log_probs: torch.Tensor, seq_lens: torch.Tensor, blank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best path of [B, T, C]: argmax per frame, repeats merged, blanks removed, vectorised.

    Returns labels [B, L] (padded with 0) and their lengths [B], on the input's device.
    """
    best = log_probs.argmax(-1)  # [B, T]
    frames = torch.arange(best.shape[1], device=best.device)[None, :]
    new = torch.ones_like(best, dtype=torch.bool)
    new[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = new & (best != blank) & (frames < seq_lens.to(best.device)[:, None])
    lens = keep.sum(1)
    pos = torch.where(keep, keep.cumsum(1) - 1, best.shape[1])  # dropped frames go to a spare column
    out = torch.zeros(best.shape[0], best.shape[1] + 1, dtype=best.dtype, device=best.device)
    out.scatter_(1, pos, best)
    return out[:, : int(lens.max()) if lens.numel() else 0], lens


def greedy_decode(log_probs: torch.Tensor, seq_lens: torch.Tensor, blank: int) -> list[list[int]]:
    labels, lens = greedy_labels(log_probs, seq_lens, blank)
    return [row[:n].tolist() for row, n in zip(labels.cpu(), lens.cpu())]


# --- prefix beam search ---


@dataclass
class Hypothesis:
    labels: Prefix
    score: float  # am_score + lm_weight * lm_score + length_bonus * (length units: labels or words)
    am_score: float  # log of the sum over all alignments of the labels (CTC)
    lm_score: float = 0.0


class LabelUnits:
    """What the length bonus counts: labels."""

    def steps(self, prefix: Prefix) -> np.ndarray | float:
        """Units completed by each label [C] appended to the prefix (a number: the same for all)."""
        return 1.0

    def end(self, prefix: Prefix) -> int:
        """Units completed by ending the hypothesis after the prefix."""
        return 0


class WordUnits(LabelUnits):
    """Words of character or BPE labels (the word insertion bonus that goes with a word LM, Hannun et al.
    2014's β): a word counts once a word boundary (the space label, a piece starting with "▁") or the end
    of the hypothesis follows it, where a word LM scores it."""

    def __init__(self, vocab: Sequence[str]):
        self.boundary = np.array([is_word_boundary(label) for label in vocab], dtype=bool)
        self.has_text = [bool(word_text(label)) for label in vocab]

    def steps(self, prefix: Prefix) -> np.ndarray:
        return self.boundary.astype(np.float64) if self._in_word(prefix) else np.zeros(len(self.boundary))

    def end(self, prefix: Prefix) -> int:
        return int(self._in_word(prefix))

    def _in_word(self, prefix: Prefix) -> bool:
        """Whether the prefix ends in a word, with text after its last boundary."""
        for label in reversed(prefix):
            if self.has_text[label]:
                return True
            if self.boundary[label]:
                return False
        return False


def ctc_prefix_beam_search(
    log_probs: np.ndarray | torch.Tensor,
    beam_size: int,
    blank: int,
    lm: LabelLM | None = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    token_beam: int | None = None,
    lm_end: Callable[[list[Prefix]], np.ndarray] | None = None,
    length_units: LabelUnits | None = None,
) -> list[Hypothesis]:
    """Hypotheses of one sequence's [T, C] log-probs, best first (at most beam_size).

    token_beam: extend each prefix per frame only by the `token_beam` most probable labels (None: by all).
    lm: shallow fusion, the score of extending a prefix by c adds lm_weight * log P_LM(c | prefix);
    lm_end gives log P_LM(end | prefix) [N], added (times lm_weight) to the final hypotheses.
    length_bonus: added per length unit, per label unless `length_units` counts otherwise (WordUnits).

    Per frame, every extension of every prefix is one entry of an [N, C] array (numpy, not a Python loop
    over labels); only the beam_size best become prefixes. search_reference.py is the same search written
    label by label.
    """
    lp = _as_numpy(log_probs)
    num_labels = lp.shape[1]
    units_of = length_units or LabelUnits()
    if not lm_weight:  # an LM at weight 0 only costs time (and 0 · -inf would be NaN)
        lm, lm_end = None, None
    # the beam: prefixes and the log prob of their alignments so far that end in blank / in their last label
    prefixes: list[Prefix] = [()]
    in_blank, in_label = np.zeros(1), np.full(1, NEG_INF)
    # per prefix ever in the beam: its LM score and length units, each its parent's plus its last label's
    lm_scores: dict[Prefix, float] = {(): 0.0}
    units: dict[Prefix, float] = {(): 0.0}
    lm_cache: dict[Prefix, np.ndarray] = {}
    for frame in lp:
        stay_blank, stay_label, grow = _advance(prefixes, in_blank, in_label, frame, blank, token_beam)
        # rank: acoustic + weighted LM + length bonus; column 0 stays, column 1 + c grows by c
        base = np.array([lm_weight * lm_scores[p] + length_bonus * units[p] for p in prefixes])
        lm_rows = np.zeros_like(grow)
        if lm is not None:
            _fill_lm_cache(lm, prefixes, lm_cache)
            lm_rows = _columns(np.stack([lm_cache[p] for p in prefixes]), num_labels)
        unit_rows = np.stack([_columns(units_of.steps(p), num_labels) for p in prefixes])
        rank = np.empty((len(prefixes), num_labels + 1))
        rank[:, 0] = np.logaddexp(stay_blank, stay_label) + base
        rank[:, 1:] = grow + base[:, None] + length_bonus * unit_rows + lm_weight * lm_rows
        kept, kept_blank, kept_label = [], [], []
        for flat in np.argsort(-rank, axis=None, kind="stable")[:beam_size].tolist():  # ties: beam order
            i, column = divmod(flat, num_labels + 1)
            if column == 0:
                prefix, b, lab = prefixes[i], stay_blank[i], stay_label[i]
            else:
                c = column - 1
                prefix, b, lab = (*prefixes[i], c), NEG_INF, grow[i, c]
                if prefix not in lm_scores:
                    lm_scores[prefix] = lm_scores[prefixes[i]] + float(lm_rows[i, c])
                    units[prefix] = units[prefixes[i]] + float(unit_rows[i, c])
            if np.logaddexp(b, lab) > NEG_INF:
                kept.append(prefix)
                kept_blank.append(b)
                kept_label.append(lab)
        prefixes, in_blank, in_label = kept, np.array(kept_blank), np.array(kept_label)
        if not prefixes:
            break
    end = np.asarray(lm_end(prefixes), dtype=np.float64) if lm_end is not None and prefixes else None
    hyps = []
    for i, prefix in enumerate(prefixes):
        lm_score = lm_scores[prefix] + (float(end[i]) if end is not None else 0.0)
        am = float(np.logaddexp(in_blank[i], in_label[i]))
        length = units[prefix] + units_of.end(prefix)
        hyps.append(Hypothesis(prefix, am + lm_weight * lm_score + length_bonus * length, am, lm_score))
    return sorted(hyps, key=lambda h: -h.score)


def _as_numpy(log_probs) -> np.ndarray:
    if isinstance(log_probs, torch.Tensor):
        return log_probs.detach().float().cpu().numpy().astype(np.float64)
    return np.asarray(log_probs, dtype=np.float64)


def _advance(
    prefixes: list[Prefix],
    in_blank: np.ndarray,
    in_label: np.ndarray,
    frame: np.ndarray,
    blank: int,
    token_beam: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame of the CTC prefix recursion: each prefix's log prob of ending in blank and in its last label
    if it stays [N] (with the grown prefixes merged in that are in the beam already), and of each prefix grown
    by each label [N, C] (-inf for the blank, labels token_beam leaves out, and the merged ones)."""
    total = np.logaddexp(in_blank, in_label)
    last = np.array([p[-1] if p else -1 for p in prefixes], dtype=np.int64)
    has_last = last >= 0
    # staying: a blank, or the last label repeated without a blank in between
    stay_blank = total + frame[blank]
    stay_label = np.where(has_last, in_label + frame[np.maximum(last, 0)], NEG_INF)
    # growing by c: after the same label, only the paths through a blank start a new one
    grow = total[:, None] + frame[None, :]
    rows = np.flatnonzero(has_last)
    grow[rows, last[rows]] = in_blank[rows] + frame[last[rows]]
    grow[:, ~_extendable(frame, blank, token_beam)] = NEG_INF
    # a prefix grown into one that is in the beam already joins it
    position = {p: i for i, p in enumerate(prefixes)}
    for i, p in enumerate(prefixes):
        parent = position.get(p[:-1]) if p else None
        if parent is not None:
            stay_label[i] = np.logaddexp(stay_label[i], grow[parent, p[-1]])
            grow[parent, p[-1]] = NEG_INF
    return stay_blank, stay_label, grow


def _extendable(frame: np.ndarray, blank: int, token_beam: int | None) -> np.ndarray:
    """[C] bool: the labels prefixes grow by in this frame (all but blank, or the token_beam best)."""
    allowed = np.ones(len(frame), dtype=bool)
    allowed[blank] = False
    if token_beam is not None and token_beam < len(frame) - 1:
        labels = np.flatnonzero(allowed)
        allowed[:] = False
        allowed[labels[np.argsort(-frame[labels], kind="stable")[:token_beam]]] = True
    return allowed


def _columns(rows: np.ndarray | float, num_labels: int) -> np.ndarray:
    """rows [..., V] as [..., C]: scores over a vocabulary without the blank CTC appends get a 0 column; a
    number, the same for every label."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim == 0:
        return np.full(num_labels, float(rows))
    if rows.shape[-1] == num_labels:
        return rows
    pad = [(0, 0)] * (rows.ndim - 1) + [(0, num_labels - rows.shape[-1])]
    return np.pad(rows, pad)


def _fill_lm_cache(lm: LabelLM, prefixes: list[Prefix], cache: dict) -> None:
    todo = [p for p in prefixes if p not in cache]
    if todo:
        for prefix, scores in zip(todo, np.asarray(lm(todo), dtype=np.float64)):
            cache[prefix] = scores


def beam_search_batch(
    log_probs: torch.Tensor, seq_lens: torch.Tensor, beam_size: int, blank: int, **kwargs
) -> list[list[Hypothesis]]:
    """ctc_prefix_beam_search for each sequence of [B, T, C]."""
    lp = log_probs.detach().float().cpu()
    return [
        ctc_prefix_beam_search(lp[b, : int(n)], beam_size, blank, **kwargs)
        for b, n in enumerate(seq_lens.cpu().tolist())
    ]


# --- labels to text ---


BPE_BOUNDARY = "▁"  # SentencePiece's word-start marker


def is_word_boundary(label: str) -> bool:
    """Whether a label ends the word before it: the space character, or a BPE piece that starts a word."""
    return label == " " or label.startswith(BPE_BOUNDARY)


def word_text(label: str) -> str:
    """The text a label leaves in the word it ends in: "A" -> "A", " " -> "", "▁THE" -> "THE", "▁" -> ""."""
    return label.replace(BPE_BOUNDARY, " ").split(" ")[-1]


def labels_to_text(labels: Sequence[int], vocab: Sequence[str]) -> str:
    """Characters: concatenated, the space label separates words. BPE pieces: concatenated, "▁" starts a word.
    Whitespace is normalised to single spaces."""
    text = "".join(vocab[i] for i in labels).replace(BPE_BOUNDARY, " ")
    return " ".join(text.split())


# --- dev WER/CER during training ---


def ctc_log_probs(out: Tensor) -> torch.Tensor:
    """[B, T, C] log-probs of a softmax output (from its logits when it has them)."""
    if out.logits is not None:
        return torch.log_softmax(out.logits.float(), -1)
    return torch.log(out.raw.float().clamp_min(1e-20))


def score_ctc_greedy(
    network, outputs: dict[str, Tensor], data: dict[str, Tensor]
) -> dict[str, tuple[int, int]]:
    """Greedy-decoding word and character errors of every `ctc` loss layer against its target:
    `{"wer_<layer>": (word errors, reference words), "cer_<layer>": (char errors, reference chars)}`.
    Needs the target's vocabulary (DataSpec.vocab); layers whose target has none are left out."""
    from seqtrain.layers.ctc import blank_index
    from seqtrain.wer import align, chars, words

    result = {}
    for name in network.loss_layers:
        opts = network.layers[name].opts
        vocab = network.extern_data[opts.target].vocab
        if opts.loss != "ctc" or not vocab:
            continue
        out, target = outputs[name], data[opts.target]
        hyps = greedy_decode(ctc_log_probs(out), out.time_dim.seq_lens, blank_index(out, opts.loss_opts))
        refs = [row[: int(n)].tolist() for row, n in zip(target.raw.cpu(), target.time_dim.seq_lens.cpu())]
        counts = {"wer": [0, 0], "cer": [0, 0]}
        for hyp, ref in zip(hyps, refs):
            hyp_text, ref_text = labels_to_text(hyp, vocab), labels_to_text(ref, vocab)
            for key, split in (("wer", words), ("cer", chars)):
                a = align(split(ref_text), split(hyp_text))
                counts[key][0] += a.errors
                counts[key][1] += a.ref_len
        for key, (errors, ref_len) in counts.items():
            result[f"{key}_{name}"] = (errors, ref_len)
    return result

"""The CTC prefix beam search written label by label, one dict entry per prefix (Graves 2012, sec. 7.5;
Hannun et al. 2014, algorithm 1): the reference that search.ctc_prefix_beam_search, which does the same
on [prefixes, labels] arrays, is tested and benchmarked against (benchmarks/search_speed.py). Same
arguments and results."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqtrain.search import NEG_INF, Hypothesis, LabelUnits, Prefix, _as_numpy, _columns


@dataclass
class _Beam:
    blank: float = NEG_INF  # log prob of the alignments so far that end in blank
    label: float = NEG_INF  # ... that end in the prefix's last label

    @property
    def total(self) -> float:
        return float(np.logaddexp(self.blank, self.label))


def _candidates(frame: np.ndarray, blank: int, token_beam: int | None) -> list[int]:
    labels = np.delete(np.arange(len(frame)), blank)
    if token_beam is not None:
        labels = np.sort(labels[np.argsort(-frame[labels], kind="stable")[:token_beam]])
    return labels.tolist()


def prefix_beam_search(
    log_probs,
    beam_size: int,
    blank: int,
    lm=None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    token_beam: int | None = None,
    lm_end=None,
    length_units: LabelUnits | None = None,
) -> list[Hypothesis]:
    lp = _as_numpy(log_probs)
    units_of = length_units or LabelUnits()
    if not lm_weight:
        lm, lm_end = None, None
    beams: dict[Prefix, _Beam] = {(): _Beam(blank=0.0)}
    lm_scores: dict[Prefix, float] = {(): 0.0}
    units: dict[Prefix, float] = {(): 0.0}
    for frame in lp:
        nxt: dict[Prefix, _Beam] = {}
        for prefix, beam in beams.items():
            total = beam.total
            stay = nxt.setdefault(prefix, _Beam())
            stay.blank = np.logaddexp(stay.blank, total + frame[blank])
            if prefix:  # the last label repeated without a blank in between stays the same prefix
                stay.label = np.logaddexp(stay.label, beam.label + frame[prefix[-1]])
            lm_row = _columns(lm([prefix])[0], len(frame)) if lm is not None else None
            unit_row = _columns(units_of.steps(prefix), len(frame))
            for c in _candidates(frame, blank, token_beam):
                source = beam.blank if prefix and c == prefix[-1] else total
                grown = nxt.setdefault((*prefix, c), _Beam())
                grown.label = np.logaddexp(grown.label, source + frame[c])
                if (*prefix, c) not in lm_scores:
                    lm_scores[(*prefix, c)] = lm_scores[prefix] + (lm_row[c] if lm_row is not None else 0.0)
                    units[(*prefix, c)] = units[prefix] + unit_row[c]

        def rank(item):
            prefix, beam = item
            return beam.total + lm_weight * lm_scores[prefix] + length_bonus * units[prefix]

        ranked = sorted(nxt.items(), key=rank, reverse=True)
        beams = {p: b for p, b in ranked[:beam_size] if b.total > NEG_INF}
    prefixes = list(beams)
    end = np.asarray(lm_end(prefixes), dtype=np.float64) if lm_end is not None and prefixes else None
    hyps = []
    for i, prefix in enumerate(prefixes):
        lm_score = lm_scores[prefix] + (float(end[i]) if end is not None else 0.0)
        am = beams[prefix].total
        length = units[prefix] + units_of.end(prefix)
        hyps.append(Hypothesis(prefix, am + lm_weight * lm_score + length_bonus * length, am, lm_score))
    return sorted(hyps, key=lambda h: -h.score)

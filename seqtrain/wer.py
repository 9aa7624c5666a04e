"""Edit-distance alignment and word/character error rates, with sclite/icefall-style `errs-*` reports.

`align` is the Levenshtein alignment (substitution, deletion, insertion cost 1) with a backtrace that
prefers a match/substitution, then a deletion, then an insertion. Rates are errors / reference tokens;
with no reference tokens at all the rate is 0 if there are no errors and inf otherwise (jiwer raises,
icefall divides by zero). `batch_edit_distance` is the same distance on padded torch batches, for the
label error counts computed during training.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

EPS = "*"  # marks the missing side of a deletion or insertion in reports (as icefall)


@dataclass
class Alignment:
    """(ref, hyp) token pairs; ref None: insertion, hyp None: deletion."""

    pairs: list[tuple[str | None, str | None]]

    @property
    def substitutions(self) -> int:
        return sum(r is not None and h is not None and r != h for r, h in self.pairs)

    @property
    def deletions(self) -> int:
        return sum(h is None for _, h in self.pairs)

    @property
    def insertions(self) -> int:
        return sum(r is None for r, _ in self.pairs)

    @property
    def correct(self) -> int:
        return sum(r == h for r, h in self.pairs)

    @property
    def errors(self) -> int:
        return len(self.pairs) - self.correct

    @property
    def ref_len(self) -> int:
        return sum(r is not None for r, _ in self.pairs)


def distance_matrix(ref: Sequence, hyp: Sequence) -> np.ndarray:
    """[len(ref)+1, len(hyp)+1] Levenshtein distances of all prefix pairs, one numpy row per ref token.

    Within a row the insertion term depends on the left neighbour; d[j] = min_k<=j (e[k] + j - k) turns it
    into a cumulative minimum, so each row is a few vector operations instead of a Python loop.
    """
    ids: dict = {}
    ref_ids = np.array([ids.setdefault(t, len(ids)) for t in ref], dtype=np.int64)
    hyp_ids = np.array([ids.setdefault(t, len(ids)) for t in hyp], dtype=np.int64)
    cols = np.arange(len(hyp) + 1)
    d = np.empty((len(ref) + 1, len(hyp) + 1), dtype=np.int64)
    d[0] = cols
    for i in range(1, len(ref) + 1):
        e = np.empty(len(hyp) + 1, dtype=np.int64)
        e[0] = i
        e[1:] = np.minimum(d[i - 1, 1:] + 1, d[i - 1, :-1] + (hyp_ids != ref_ids[i - 1]))
        d[i] = np.minimum.accumulate(e - cols) + cols
    return d


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    d = distance_matrix(ref, hyp)
    i, j, pairs = len(ref), len(hyp), []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            pairs.append((ref[i - 1], None))
            i -= 1
        else:
            pairs.append((None, hyp[j - 1]))
            j -= 1
    return Alignment(pairs[::-1])


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    return int(distance_matrix(ref, hyp)[-1, -1])


def error_rate(errors: int, ref_len: int) -> float:
    if ref_len == 0:
        return 0.0 if errors == 0 else math.inf
    return errors / ref_len


def words(text: str) -> list[str]:
    return text.split()


def chars(text: str) -> list[str]:
    """Characters of the text with runs of whitespace as one space (CER counts spaces, as jiwer's cer)."""
    return list(" ".join(text.split()))


@dataclass
class ErrorStats:
    """Alignments of one corpus, per sequence tag, at one token level (words or characters)."""

    unit: str = "word"
    utts: list[tuple[str, Alignment]] = field(default_factory=list)

    def add(self, tag: str, ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
        alignment = align(ref, hyp)
        self.utts.append((tag, alignment))
        return alignment

    def totals(self) -> dict[str, int]:
        keys = ("substitutions", "deletions", "insertions", "correct", "errors", "ref_len")
        return {k: sum(getattr(a, k) for _, a in self.utts) for k in keys}

    @property
    def rate(self) -> float:
        t = self.totals()
        return error_rate(t["errors"], t["ref_len"])

    def per_sequence(self) -> dict[str, dict[str, int]]:
        return {
            tag: {
                "errors": a.errors,
                "ref_len": a.ref_len,
                "substitutions": a.substitutions,
                "deletions": a.deletions,
                "insertions": a.insertions,
            }
            for tag, a in self.utts
        }

    def report(self) -> str:
        """icefall's `errs-*.txt` layout (write_error_stats): totals, per-utterance alignments, substitution,
        deletion and insertion counts, per-token statistics."""
        t = self.totals()
        name = {"word": "WER", "char": "CER"}.get(self.unit, "ER")
        lines = [
            f"%{name} = {100 * self.rate:.2f}",
            f"Errors: {t['insertions']} insertions, {t['deletions']} deletions, {t['substitutions']} "
            f"substitutions, over {t['ref_len']} reference {self.unit}s ({t['correct']} correct)",
            "Search below for sections starting with PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, "
            "INSERTIONS:, PER-WORD STATS:",
            "",
            "PER-UTT DETAILS: corr or (ref->hyp)",
            *(f"{tag}:\t{format_alignment(a)}" for tag, a in self.utts),
            "",
            *self._confusions(),
        ]
        return "\n".join(lines) + "\n"

    def _confusions(self) -> list[str]:
        subs, dels, ins = Counter(), Counter(), Counter()
        stats: dict[str, list[int]] = {}  # token -> [correct, errors, in ref, in hyp]
        for _, a in self.utts:
            for r, h in a.pairs:
                if r is not None and h is not None and r != h:
                    subs[(r, h)] += 1
                elif h is None:
                    dels[r] += 1
                elif r is None:
                    ins[h] += 1
                for tok, pos in ((r, 2), (h, 3)):
                    if tok is not None:
                        stats.setdefault(tok, [0, 0, 0, 0])[pos] += 1
                if r == h:
                    stats[r][0] += 1
                else:
                    for tok in {r, h} - {None}:
                        stats[tok][1] += 1
        return [
            "SUBSTITUTIONS: count ref -> hyp",
            *(f"{n}   {r} -> {h}" for (r, h), n in subs.most_common()),
            "",
            "DELETIONS: count ref",
            *(f"{n}   {r}" for r, n in dels.most_common()),
            "",
            "INSERTIONS: count hyp",
            *(f"{n}   {h}" for h, n in ins.most_common()),
            "",
            "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp",
            *(
                f"{tok}   {c} {e} {nr} {nh}"
                for tok, (c, e, nr, nh) in sorted(stats.items(), key=lambda kv: (-kv[1][1], kv[0]))
            ),
        ]

    def write(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(self.report(), encoding="utf8")


def format_alignment(a: Alignment) -> str:
    def show(tok: str | None) -> str:
        return EPS if tok is None else ("<space>" if tok == " " else tok)

    return " ".join(show(r) if r == h else f"({show(r)}->{show(h)})" for r, h in a.pairs)


def batch_edit_distance(
    hyp: torch.Tensor, hyp_lens: torch.Tensor, ref: torch.Tensor, ref_lens: torch.Tensor
) -> torch.Tensor:
    """[B] Levenshtein distances of padded label batches hyp [B, H] and ref [B, S], on their device.

    Rows run over the hypothesis (H steps), each vectorised over the batch and the reference with the
    cumulative-minimum form of the insertion term (see distance_matrix); padding in either never reaches the
    entry (hyp_len, ref_len) that is read.
    """
    batch, max_hyp = hyp.shape
    cols = torch.arange(ref.shape[1] + 1, device=ref.device)
    row = cols.expand(batch, -1).clone()
    hyp_lens, ref_lens = hyp_lens.to(ref.device), ref_lens.to(ref.device)
    result = row.gather(1, ref_lens[:, None]).squeeze(1)  # an empty hypothesis: ref_len deletions
    for i in range(1, max_hyp + 1):
        cost = (ref != hyp[:, i - 1 : i]).long()
        e = torch.cat([torch.full_like(row[:, :1], i), torch.minimum(row[:, 1:] + 1, row[:, :-1] + cost)], 1)
        row = torch.cummin(e - cols, dim=1).values + cols
        result = torch.where(hyp_lens == i, row.gather(1, ref_lens[:, None]).squeeze(1), result)
    return result

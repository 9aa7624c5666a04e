"""wer: alignments and counts worked out by hand, edge cases, the torch batch distance, errs reports."""

from __future__ import annotations

import math
import random

import torch

from seqtrain.wer import ErrorStats, align, batch_edit_distance, chars, edit_distance, error_rate


def naive_distance(a, b) -> int:
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_alignment_counts_by_hand():
    a = align("the cat sat on the mat".split(), "the hat sat the mat too".split())
    assert (a.substitutions, a.deletions, a.insertions, a.correct) == (1, 1, 1, 4)
    assert a.pairs[1] == ("cat", "hat") and a.pairs[3] == ("on", None) and a.pairs[-1] == (None, "too")
    assert a.ref_len == 6 and a.errors == 3


def test_empty_reference_and_hypothesis():
    assert align([], []).pairs == [] and error_rate(0, 0) == 0.0
    all_ins = align([], ["a", "b", "c"])
    assert (all_ins.insertions, all_ins.errors, all_ins.ref_len) == (3, 3, 0)
    assert math.isinf(error_rate(all_ins.errors, all_ins.ref_len))
    all_del = align(["a", "b"], [])
    assert (all_del.deletions, all_del.errors) == (2, 2)
    assert error_rate(all_del.errors, all_del.ref_len) == 1.0


def test_insertions_can_push_wer_above_one():
    stats = ErrorStats("word")
    stats.add("s1", ["a"], ["x", "y", "z"])
    assert stats.rate == 3.0


def test_distance_matches_naive_dp_on_random_strings():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 8))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 8))]
        assert edit_distance(a, b) == naive_distance(a, b) == align(a, b).errors


def test_batch_edit_distance_on_padded_batches():
    rng = random.Random(1)
    refs = [[rng.randint(1, 4) for _ in range(rng.randint(0, 7))] for _ in range(20)]
    hyps = [[rng.randint(1, 4) for _ in range(rng.randint(0, 7))] for _ in range(20)]

    def pad(xs):
        t = torch.full((len(xs), max(map(len, xs)) or 1), 9)  # padding never matches a label
        for i, x in enumerate(xs):
            t[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        return t, torch.tensor([len(x) for x in xs])

    got = batch_edit_distance(*pad(hyps), *pad(refs))
    assert got.tolist() == [naive_distance(r, h) for r, h in zip(refs, hyps)]


def test_cer_counts_characters_with_spaces():
    a = align(chars("ab  c"), chars("abc"))
    assert chars("ab  c") == ["a", "b", " ", "c"] and a.deletions == 1


def test_errs_report_sections(tmp_path):
    stats = ErrorStats("word")
    stats.add("utt1", "a b c".split(), "a x c d".split())
    stats.add("utt2", "e".split(), [])
    stats.write(tmp_path / "errs-wer.txt")
    text = (tmp_path / "errs-wer.txt").read_text()
    assert text.startswith("%WER = 75.00\n")
    assert "Errors: 1 insertions, 1 deletions, 1 substitutions, over 4 reference words (2 correct)" in text
    assert "utt1:\ta (b->x) c (*->d)" in text and "utt2:\t(e->*)" in text
    for section in ("SUBSTITUTIONS:", "DELETIONS:", "INSERTIONS:", "PER-WORD STATS:"):
        assert section in text
    assert "1   b -> x" in text
    assert stats.per_sequence()["utt1"] == {
        "errors": 2,
        "ref_len": 3,
        "substitutions": 1,
        "deletions": 0,
        "insertions": 1,
    }

"""The `lm` dataset: text corpora for language models, words or characters, one sequence per line or
fixed-size blocks of tokens across lines.

Semantics of RETURNN's LmDataset with `add_delayed_seq_data=True`, under seqtrain's key names:
`classes` = the line's tokens + `seq_end_symbol` (RETURNN's `data`), `data` = `seq_start_symbol` +
`classes[:-1]` (RETURNN's `delayed`), so the model reads `data[t]` and predicts `classes[t]`. Whitespace is
collapsed and stripped as RETURNN's `parse_orthography` does; tags are `line-<n>`, counting kept lines.
`sample_break_mode` (fairseq's TokenBlockDataset) joins these per-line pairs into one stream and cuts it into
samples of `tokens_per_sample` tokens (`none`) or of whole lines (`complete`); a line's first input stays
`seq_start_symbol`, so every mode gives the model the same (input, target) pairs, only with more context.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import MISSING

from seqtrain.config import opt
from seqtrain.datasets import DATASETS
from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec
from seqtrain.datasets.vocab import Vocabulary
from seqtrain.errors import ConfigError, DataError


@dataclass
class LmOptions(DatasetOptions):
    corpus_file: list[str] = opt(MISSING, "text files, one sequence per line, concatenated (.gz: gzip)")
    units: str = opt("word", "word (split at whitespace) or char (every character, spaces included)")
    vocab_file: str | None = opt(
        None, "vocabulary (dict literal or one label per line); if missing, built and written there"
    )
    vocab_build_from: list[str] | None = opt(
        None,
        "text files to build a missing vocabulary from (default: corpus_file; give the train text for dev)",
    )
    vocab_min_count: int = opt(1, "building: keep symbols seen at least this often", ge=1)
    vocab_max_size: int | None = opt(
        None, "building: keep the most frequent symbols, specials included", ge=1
    )
    unknown_symbol: str | None = opt(
        "<unk>", "stands for symbols not in the vocabulary (null: they are errors)"
    )
    seq_start_symbol: str = opt("<s>", "first input label (RETURNN's delayed_seq_data_start_symbol)")
    seq_end_symbol: str | None = opt("</s>", "appended to each target sequence (RETURNN's seq_end_symbol)")
    skip_empty_lines: bool = opt(True, "empty lines are no sequences (as RETURNN)")
    uppercase: bool = opt(False, "upper-case the text (e.g. PTB text for an LM over LibriSpeech's labels)")
    drop_words: list[str] = opt(factory=list, help="words removed from every line (e.g. PTB's <unk> and N)")
    keep_chars: str | None = opt(
        None, "only these characters are kept, others dropped (e.g. LibriSpeech's A-Z, ' and space)"
    )
    join_clitics: bool = opt(
        False, "attach split clitics (PTB's 's, n't, 're, ...) to the word before, as LibriSpeech writes them"
    )
    tag_prefix: str | None = opt(
        None, "sequence tag = prefix + index of the sample (default: line- for eos, block- otherwise)"
    )
    line_fraction: list[float] | None = opt(
        None, "[from, to]: only this fraction of the kept lines, e.g. [0, 0.9] train and [0.9, 1] dev"
    )
    sample_break_mode: str = opt(
        "eos",
        "eos: one sequence per line; none: blocks of tokens_per_sample tokens across lines; "
        "complete: whole lines joined up to tokens_per_sample (fairseq's names)",
    )
    tokens_per_sample: int | None = opt(
        None, "none/complete: tokens per sample (the last block may be shorter; a longer line stays whole)"
    )


BREAK_MODES = ("eos", "none", "complete")


def fraction_slice(fraction: list[float], n: int, where: str) -> slice:
    if len(fraction) != 2 or not 0.0 <= fraction[0] < fraction[1] <= 1.0:
        raise ConfigError(f"{where}: expected [from, to] with 0 <= from < to <= 1, got {list(fraction)}")
    return slice(round(fraction[0] * n), round(fraction[1] * n))


def open_text(path: str):
    if not Path(path).is_file():
        raise DataError(f"text file {path} not found")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf8")
    return open(path, encoding="utf8")


class TextFilter:
    """The text normalization of LmOptions: dropped words, joined clitics, upper-casing, kept characters;
    whitespace is collapsed and stripped."""

    # a token that is an apostrophe and letters, or n't, continues the word before it: "do n't", "company 's"
    CLITIC = re.compile(r" (?=(?:'[^\s']*|n't)(?:\s|$))", re.IGNORECASE)

    def __init__(self, opts: LmOptions):
        self.uppercase, self.drop, self.join_clitics = opts.uppercase, set(opts.drop_words), opts.join_clitics
        chars = opts.keep_chars
        self.others = re.compile(f"[^{re.escape(chars)}\\s]") if chars is not None else None

    def __call__(self, line: str) -> str:
        words = line.split()
        if self.drop:  # as written in the file, before upper-casing
            words = [w for w in words if w not in self.drop]
        text = " ".join(words)
        if self.join_clitics:
            text = self.CLITIC.sub("", text)
        if self.uppercase:
            text = text.upper()
        if self.others is not None:
            text = " ".join(self.others.sub("", text).split())
        return text


def iter_lines(paths: list[str], skip_empty: bool, normalize: TextFilter) -> Iterator[tuple[str, str]]:
    """(`file:line`, normalized text) of every sequence."""
    for path in paths:
        with open_text(path) as f:
            try:
                for num, line in enumerate(f, 1):
                    text = normalize(line)
                    if text or not skip_empty:
                        yield f"{path}:{num}", text
            except (UnicodeDecodeError, OSError, EOFError) as exc:
                raise DataError(f"text file {path}: cannot read: {exc}") from None


def split_units(text: str, units: str) -> list[str]:
    return text.split() if units == "word" else list(text)


def sample_bounds(line_lens: np.ndarray, mode: str, size: int | None) -> np.ndarray:
    """Start offsets of the samples in the joined stream of lines (with the stream's end appended)."""
    ends = np.cumsum(line_lens)
    total = int(ends[-1]) if len(ends) else 0
    if mode == "eos":
        return np.concatenate([[0], ends])
    if mode == "none":
        return np.append(np.arange(0, total, size), total)
    bounds, start = [0], 0  # complete: greedy, a sample ends at the last line end that keeps it <= size
    for prev, end in zip(np.concatenate([[0], ends[:-1]]), ends):
        if end - start > size and prev > start:
            bounds.append(int(prev))
            start = int(prev)
    return np.array(bounds + [total])


@DATASETS.register("lm", LmOptions)
class LmDataset(Dataset):
    """All lines are read and encoded once into one stream of (input, target) pairs; samples are slices."""

    def __init__(self, opts: LmOptions, name: str):
        super().__init__(opts, name)
        if opts.units not in ("word", "char"):
            raise ConfigError(f"{name}.units: expected word or char, got {opts.units!r}")
        if not opts.corpus_file:
            raise ConfigError(f"{name}.corpus_file: give at least one text file")
        self._check_break_mode(opts)
        self.vocab = self._vocabulary(opts)
        specials = [opts.seq_start_symbol] + (
            [opts.seq_end_symbol] if opts.seq_end_symbol is not None else []
        )
        for sym in specials:
            if sym not in self.vocab.index:
                raise DataError(f"{name}: symbol {sym!r} is not in the vocabulary {self.vocab.source}")
        self._start = self.vocab.index[opts.seq_start_symbol]
        self._end = self.vocab.index.get(opts.seq_end_symbol) if opts.seq_end_symbol is not None else None
        self._data, self._classes, line_lens = self._encode_corpus(opts)
        self._bounds = sample_bounds(line_lens, opts.sample_break_mode, opts.tokens_per_sample)
        if opts.tag_prefix is None:
            self._tag_prefix = "line-" if opts.sample_break_mode == "eos" else "block-"
        else:
            self._tag_prefix = opts.tag_prefix

    def _check_break_mode(self, opts: LmOptions) -> None:
        mode, size = opts.sample_break_mode, opts.tokens_per_sample
        if mode not in BREAK_MODES:
            raise ConfigError(
                f"{self.name}.sample_break_mode: unknown {mode!r}; known: {', '.join(BREAK_MODES)}"
            )
        if mode != "eos" and (size is None or size < 1):
            raise ConfigError(f"{self.name}.tokens_per_sample: sample_break_mode {mode} needs a size >= 1")

    def _vocabulary(self, opts: LmOptions) -> Vocabulary:
        if opts.vocab_file and Path(opts.vocab_file).is_file():
            return Vocabulary.load(opts.vocab_file, opts.unknown_symbol)
        counts = Counter()
        paths = list(opts.vocab_build_from or opts.corpus_file)
        for _, text in iter_lines(paths, skip_empty=True, normalize=TextFilter(opts)):
            counts.update(split_units(text, opts.units))
        specials = [opts.seq_start_symbol, opts.seq_end_symbol]
        vocab = Vocabulary.build(
            counts,
            [s for s in specials if s is not None],
            opts.unknown_symbol,
            opts.vocab_min_count,
            opts.vocab_max_size,
        )
        if opts.vocab_file:
            vocab.save(opts.vocab_file)
            vocab.source = opts.vocab_file
        return vocab

    def _encode_corpus(self, opts: LmOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The joined input and target streams (int32) and the tokens per line in them."""
        lines = list(iter_lines(list(opts.corpus_file), opts.skip_empty_lines, TextFilter(opts)))
        if opts.line_fraction is not None:
            lines = lines[fraction_slice(opts.line_fraction, len(lines), f"{self.name}.line_fraction")]
        if not lines:
            raise DataError(f"{self.name}: no sequences in {', '.join(opts.corpus_file)}")
        data, classes = [], []
        for where, text in lines:
            tokens = self.vocab.encode(split_units(text, opts.units), where)
            targets = np.append(tokens, self._end) if self._end is not None else tokens
            classes.append(targets)
            data.append(np.concatenate([[self._start], tokens])[: len(targets)])
        lens = np.fromiter((len(c) for c in classes), dtype=np.int64, count=len(classes))
        return np.concatenate(data).astype(np.int32), np.concatenate(classes).astype(np.int32), lens

    @property
    def num_seqs(self) -> int:
        return len(self._bounds) - 1

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        spec = DataSpec(len(self.vocab), sparse=True, dtype="int32", vocab=self.vocab.labels)
        return {"data": spec, "classes": spec}

    def seq_tag(self, idx: int) -> str:
        return f"{self._tag_prefix}{idx}"

    def seq_len(self, idx: int) -> dict[str, int]:
        n = int(self._bounds[idx + 1] - self._bounds[idx])
        return {"data": n, "classes": n}

    def get_seq(self, idx: int) -> dict[str, np.ndarray]:
        span = slice(self._bounds[idx], self._bounds[idx + 1])
        return {"data": self._data[span].copy(), "classes": self._classes[span].copy()}

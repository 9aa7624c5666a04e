"""Label vocabularies: read and write RETURNN's vocab files, build one from counted symbols, encode text.

File formats as RETURNN's `Vocabulary` reads them: a Python/JSON dict literal `{"label": index, ...}`
(what we write), or one label per line (index = line number).
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from seqtrain.errors import DataError


class Vocabulary:
    """Labels by index; `unknown` (if set) stands in for symbols not in the vocabulary."""

    def __init__(self, labels: Sequence[str], unknown: str | None = None, source: str = "vocabulary"):
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.source = source  # file name (or description) for messages
        if len(self.index) != len(self.labels):
            dup = next(x for x in self.labels if self.labels.count(x) > 1)
            raise DataError(f"{source}: label {dup!r} appears twice")
        if unknown is not None and unknown not in self.index:
            raise DataError(f"{source}: unknown symbol {unknown!r} is not in the vocabulary")
        self.unknown = unknown

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def build(
        cls,
        counts: Counter,
        specials: Sequence[str] = (),
        unknown: str | None = None,
        min_count: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Specials first (in the given order), then symbols by falling count, ties by symbol."""
        specials = list(dict.fromkeys(s for s in (*specials, unknown) if s is not None))
        rest = sorted(
            (s for s, n in counts.items() if n >= min_count and s not in specials),
            key=lambda s: (-counts[s], s),
        )
        if max_size is not None:
            rest = rest[: max(max_size - len(specials), 0)]
        return cls(specials + rest, unknown, "built vocabulary")

    @classmethod
    def load(cls, path: str | Path, unknown: str | None = None) -> Vocabulary:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf8")
        except OSError as exc:
            raise DataError(f"vocabulary file {path}: cannot read: {exc.strerror or exc}") from None
        if text.startswith("{"):
            try:
                mapping = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise DataError(f"vocabulary file {path}: not a dict literal: {exc}") from None
            labels = _labels_from_mapping(mapping, str(path))
        else:
            labels = text.splitlines()
        return cls(labels, unknown, str(path))

    def save(self, path: str | Path) -> None:
        """Write as a dict literal (RETURNN reads it as is), atomically: readers never see half a file."""
        write_atomic(path, json.dumps(self.index, ensure_ascii=False, indent=0) + "\n")

    def encode(self, symbols: Iterable[str], where: str) -> np.ndarray:
        """Indices (int32) of `symbols`; `where` (file:line or tag) names the culprit of an unknown symbol."""
        symbols = list(symbols)
        unk = self.index[self.unknown] if self.unknown is not None else None
        out = [self.index.get(s, unk) for s in symbols]
        if unk is None and None in out:
            bad = symbols[out.index(None)]
            raise DataError(f"{where}: symbol {bad!r} is not in the vocabulary {self.source}")
        return np.asarray(out, dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.labels[int(i)] for i in ids]


def _labels_from_mapping(mapping: object, where: str) -> list[str]:
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise DataError(f"vocabulary file {where}: expected a dict label -> index")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise DataError(f"vocabulary file {where}: indices must be 0..{len(mapping) - 1}, each once")
    return [label for label, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write via a temp file in the same folder and rename, so parallel readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf8") if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Generated tasks: RETURNN's Task12AX memory task (and friends), regenerated each epoch like RETURNN does."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from seqtrain.config import opt
from seqtrain.datasets import DATASETS
from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec


@dataclass
class GeneratingOptions(DatasetOptions):
    num_seqs: int = opt(1000, "number of sequences per epoch", ge=1)


class GeneratingDataset(Dataset):
    """Generates `num_seqs` sequences from the epoch's seed (or `fixed_random_seed`, e.g. for dev)."""

    def __init__(self, opts: GeneratingOptions, name: str):
        super().__init__(opts, name)
        self._seqs: list[dict[str, np.ndarray]] = []
        self._seed: int | None = None

    @property
    def num_seqs(self) -> int:
        return self.opts.num_seqs

    def prepare_epoch(self, epoch: int) -> None:
        seed = self.random_seed_for_epoch(epoch)
        if seed != self._seed:
            rng = random.Random(seed)  # Python's RNG: ~20x faster than numpy's per scalar draw
            self._seqs = [self.generate_seq(rng) for _ in range(self.num_seqs)]
            self._seed = seed

    def get_seq(self, idx: int) -> dict[str, np.ndarray]:
        if not self._seqs:
            self.prepare_epoch(self.epoch or 1)
        return self._seqs[idx]

    def seq_tag(self, idx: int) -> str:
        return f"seq-{idx}"

    def generate_seq(self, rng: random.Random) -> dict[str, np.ndarray]:
        raise NotImplementedError


@DATASETS.register("task12ax", GeneratingOptions)
class Task12AXDataset(GeneratingDataset):
    """The 12AX memory task (O'Reilly & Frank 2006) as in RETURNN's Task12AXDataset.

    Input: one-hot symbols of "123ABCXYZ". Target per frame: R if the frame closes the pattern
    1-A-X or 2-B-Y (outer context 1/2, inner pair A-X/B-Y), else L.
    """

    SYMBOLS = "123ABCXYZ"
    CLASSES = "LR"

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        return {
            "data": DataSpec(len(self.SYMBOLS), vocab=list(self.SYMBOLS)),
            "classes": DataSpec(len(self.CLASSES), sparse=True, dtype="int32", vocab=list(self.CLASSES)),
        }

    def generate_seq(self, rng: random.Random) -> dict[str, np.ndarray]:
        symbols = self.make_input(rng, rng.randrange(10, 100))
        data = np.zeros((len(symbols), len(self.SYMBOLS)), dtype=np.float32)
        data[np.arange(len(symbols)), symbols] = 1.0
        return {"data": data, "classes": np.asarray(self.targets(symbols), dtype=np.int32)}

    @classmethod
    def make_input(cls, rng: random.Random, seq_len: int) -> list[int]:
        # RETURNN's distribution, tuned so that R targets are not too rare.
        text = rng.choice(("", "1", "2"))
        while len(text) < seq_len:
            if rng.random() < 0.5:
                text += rng.choice("12")
            if rng.random() < 0.9:
                text += rng.choice(("AX", "BY"))
            while rng.random() < 0.5:
                text += rng.choice(cls.SYMBOLS)
        return [cls.SYMBOLS.index(c) for c in text[:seq_len]]

    @classmethod
    def targets(cls, symbols: list[int]) -> list[int]:
        outer = inner = ""
        out = []
        for c in (cls.SYMBOLS[i] for i in symbols):
            target = "L"
            if c in "12":
                outer = c
            elif c in "AB":
                inner = c
            elif c in "XY":
                if outer + inner + c in ("1AX", "2BY"):
                    target = "R"
                inner = ""
            out.append(cls.CLASSES.index(target))
        return out

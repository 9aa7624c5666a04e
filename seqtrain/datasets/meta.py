"""The `meta` dataset: keys from several datasets joined by sequence tag, as RETURNN's MetaDataset.

The corpus is that of the default sub-dataset (`seq_order_control_dataset`, else the one that provides key
`data`); every other sub-dataset must hold each of its tags. With `seq_order_control_dataset` the order of
each epoch is that sub-dataset's own (its `seq_ordering`, `partition_epoch`), as in RETURNN; without it, this
dataset's `seq_ordering` applies, sorting by the length of `data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import MISSING

from seqtrain.config import opt
from seqtrain.datasets import DATASETS
from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec, build_dataset
from seqtrain.errors import ConfigError, DataError


@dataclass
class MetaOptions(DatasetOptions):
    datasets: dict[str, Any] = opt(MISSING, "sub-datasets by name: {feat: {class: hdf, ...}, text: {...}}")
    data_map: dict[str, list[str]] = opt(
        MISSING, "our key -> [sub-dataset name, its key], e.g. classes: [text, classes]"
    )
    seq_order_control_dataset: str | None = opt(
        None, "sub-dataset whose own seq_ordering/partition_epoch order each epoch (default: ours apply)"
    )


@DATASETS.register("meta", MetaOptions)
class MetaDataset(Dataset):
    """Joins the keys of `data_map` from the sub-datasets by sequence tag."""

    def __init__(self, opts: MetaOptions, name: str):
        super().__init__(opts, name)
        self.data_map = self._check_data_map(opts)
        self.control = opts.seq_order_control_dataset
        self._check_control(opts)
        self.default = self.control or self.data_map["data"][0]
        used = dict.fromkeys(ds for ds, _ in self.data_map.values())
        self.datasets: dict[str, Dataset] = {
            ds: build_dataset(opts.datasets[ds], f"{name}.datasets.{ds}") for ds in used
        }
        self._check_keys()
        self._tags = [
            self.datasets[self.default].seq_tag(i) for i in range(self.datasets[self.default].num_seqs)
        ]
        self._index = {ds: self._index_by_tag(ds) for ds in self.datasets}

    def _check_data_map(self, opts: MetaOptions) -> dict[str, tuple[str, str]]:
        out = {}
        for key, target in opts.data_map.items():
            if len(target) != 2:
                raise ConfigError(f"{self.name}.data_map.{key}: expected [dataset, key], got {list(target)}")
            if target[0] not in opts.datasets:
                raise ConfigError(
                    f"{self.name}.data_map.{key}: unknown dataset {target[0]!r}; "
                    f"known: {', '.join(sorted(opts.datasets))}"
                )
            out[key] = (target[0], target[1])
        if not out:
            raise ConfigError(f"{self.name}.data_map: map at least one key")
        return out

    def _check_control(self, opts: MetaOptions) -> None:
        if self.control is None:
            if "data" not in self.data_map:
                raise ConfigError(
                    f"{self.name}: without a key 'data' in data_map, set seq_order_control_dataset"
                )
            return
        if self.control not in opts.datasets:
            raise ConfigError(
                f"{self.name}.seq_order_control_dataset: unknown dataset {self.control!r}; "
                f"known: {', '.join(sorted(opts.datasets))}"
            )
        if opts.seq_ordering != "default" or opts.partition_epoch != 1:
            raise ConfigError(
                f"{self.name}: seq_ordering/partition_epoch are taken from "
                f"datasets.{self.control}; set them there"
            )
        if all(ds != self.control for ds, _ in self.data_map.values()):
            raise ConfigError(
                f"{self.name}.seq_order_control_dataset: {self.control!r} provides no key of data_map"
            )

    def _check_keys(self) -> None:
        for key, (ds, sub_key) in self.data_map.items():
            known = self.datasets[ds].extern_data
            if sub_key not in known:
                raise ConfigError(
                    f"{self.name}.data_map.{key}: dataset {ds!r} has no key {sub_key!r}; "
                    f"known: {', '.join(known)}"
                )

    def _index_by_tag(self, ds: str) -> np.ndarray:
        """For each of our sequences, its index in sub-dataset `ds`."""
        sub = self.datasets[ds]
        if ds == self.default:
            return np.arange(len(self._tags))
        by_tag = {sub.seq_tag(i): i for i in range(sub.num_seqs)}
        missing = next((t for t in self._tags if t not in by_tag), None)
        if missing is not None:
            raise DataError(
                f"{self.name}: sequence {missing!r} of dataset {self.default!r} is missing in "
                f"dataset {ds!r} ({self.name}.datasets.{ds})"
            )
        return np.asarray([by_tag[t] for t in self._tags], dtype=np.int64)

    @property
    def num_seqs(self) -> int:
        return len(self._tags)

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        return {key: self.datasets[ds].extern_data[sub_key] for key, (ds, sub_key) in self.data_map.items()}

    def seq_tag(self, idx: int) -> str:
        return self._tags[idx]

    def seq_len(self, idx: int) -> dict[str, int]:
        lens = {ds: sub.seq_len(int(self._index[ds][idx])) for ds, sub in self.datasets.items()}
        return {key: lens[ds][sub_key] for key, (ds, sub_key) in self.data_map.items() if sub_key in lens[ds]}

    def get_seq(self, idx: int) -> dict[str, np.ndarray]:
        seqs = {ds: sub.get_seq(int(self._index[ds][idx])) for ds, sub in self.datasets.items()}
        return {key: seqs[ds][sub_key] for key, (ds, sub_key) in self.data_map.items()}

    def prepare_epoch(self, epoch: int) -> None:
        for sub in self.datasets.values():  # generated sub-datasets regenerate; the control one orders
            sub.init_epoch(epoch)

    def seq_order_for_epoch(self, epoch: int) -> np.ndarray:
        if self.control is None:
            return super().seq_order_for_epoch(epoch)
        return np.asarray(self.datasets[self.control].seq_order).copy()

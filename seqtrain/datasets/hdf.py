"""RETURNN's HDF format: the `hdf` dataset reads it exactly as RETURNN's HDFDataset, `HDFWriter` writes it.

Layout (RETURNN `HDFDataset.add_file`, `SimpleHDFWriter`): `inputs` holds the frames of key `data` of all
sequences concatenated, `targets/data/<key>` those of every other key; `seqLengths[seq]` has one column per
key in the order `[inputs, *sorted(target keys)]`; `seqTags` names the sequences; `targets/size` attrs are
`[dim, ndim]` per key, root attr `inputPattSize` the dim of sparse inputs; labels in `labels` and
`targets/labels/<key>`. A key is sparse iff it is integer and has no feature axis.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from omegaconf import MISSING

from seqtrain.config import opt
from seqtrain.datasets import DATASETS
from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec
from seqtrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class HDFOptions(DatasetOptions):
    files: list[str] = opt(MISSING, "RETURNN HDF files, concatenated in this order (relative to the cwd)")


@dataclass
class _Key:
    """Where one data key lives in a file: its h5 path and seqLengths column."""

    h5_path: str
    column: int
    spec: DataSpec
    ndim: int  # stored ndim (1: no feature axis)


def _decode(s: str | bytes) -> str:
    # RETURNN HDFDataset._decode: fixed-size strings may carry NUL padding.
    return (s.decode("utf8") if isinstance(s, bytes) else s).split("\0")[0]


def _labels(ds: h5py.Dataset | None, dim: int) -> list[str] | None:
    if ds is None or len(ds) != dim:
        return None
    return [_decode(x) for x in ds[...].tolist()]


def _spec(stored: h5py.Dataset, dim: int, ndim: int, labels: list[str] | None) -> DataSpec:
    sparse = ndim <= 1 and np.issubdtype(stored.dtype, np.integer)
    return DataSpec(dim=dim, sparse=sparse, dtype=str(stored.dtype), vocab=labels)


def read_keys(f: h5py.File, path: str) -> dict[str, _Key]:
    """The data keys of an open HDF file, as RETURNN's HDFDataset sees them."""
    keys: dict[str, _Key] = {}
    col = 0
    if "inputs" in f:
        inputs = f["inputs"]
        if inputs.ndim == 1:
            dim = int(f.attrs.get("inputPattSize", 1))
        else:
            dim = int(inputs.shape[-1])
        keys["data"] = _Key(
            "inputs", 0, _spec(inputs, dim, inputs.ndim, _labels(f.get("labels"), dim)), inputs.ndim
        )
        col = 1
    if "targets" not in f:
        return keys
    sizes = f["targets/size"].attrs if "targets/size" in f else {}
    for name in sorted(set(f["targets/data"].keys()) | set(sizes.keys())):
        stored = f["targets/data"].get(name)
        if stored is None:
            raise DataError(f"{path}: targets/size names key {name!r} but targets/data/{name} is missing")
        size = np.asarray(sizes[name]) if name in sizes else None
        if size is None:  # RETURNN: dim from the feature axis, 1 without one
            dim, ndim = (1 if stored.ndim == 1 else int(stored.shape[-1])), stored.ndim
        elif size.ndim == 0:
            dim, ndim = int(size), stored.ndim
        else:
            dim, ndim = int(size[0]), int(size[1])
        labels = _labels(f["targets/labels"].get(name) if "targets/labels" in f else None, dim)
        keys[name] = _Key(f"targets/data/{name}", col, _spec(stored, dim, ndim, labels), ndim)
        col += 1
    return keys


@dataclass
class _FileMeta:
    keys: dict[str, _Key]
    seq_lens: np.ndarray  # [num_seqs, num_columns]
    tags: list[str]


def read_meta(path: str) -> _FileMeta:
    """Keys, sequence lengths and tags of one file (the frames are not read)."""
    if not Path(path).is_file():
        raise DataError(f"HDF file {path} not found")
    try:
        with h5py.File(path, "r") as f:
            keys = read_keys(f, path)
            seq_lens = np.asarray(f["seqLengths"][...], dtype=np.int64)
            tags = [_decode(t) for t in f["seqTags"][...].tolist()]
    except (OSError, KeyError) as exc:
        raise DataError(f"HDF file {path}: not a readable RETURNN HDF file: {exc}") from None
    if seq_lens.ndim == 1:  # old files: one length for all keys
        seq_lens = np.repeat(seq_lens[:, None], max(len(keys), 1), axis=1)
    if len(seq_lens) != len(tags) or any(k.column >= seq_lens.shape[1] for k in keys.values()):
        raise DataError(
            f"HDF file {path}: seqLengths {seq_lens.shape} does not match {len(tags)} seqTags "
            f"and keys {list(keys)}"
        )
    return _FileMeta(keys, seq_lens, tags)


def _drop_string_keys(keys: dict[str, _Key], path: str) -> dict[str, _Key]:
    out = {}
    for name, key in keys.items():
        if key.spec.dtype == "object" or key.spec.dtype.startswith(("|S", "<U", "|O")):
            log.warning("%s: key %r holds strings; seqtrain cannot batch those, it is left out", path, name)
            continue
        out[name] = key
    return out


@DATASETS.register("hdf", HDFOptions)
class HDFDataset(Dataset):
    """One or many RETURNN HDF files as one corpus. Lengths come from `seqLengths`; files open lazily."""

    def __init__(self, opts: HDFOptions, name: str):
        super().__init__(opts, name)
        if not opts.files:
            raise ConfigError(f"{name}.files: give at least one HDF file")
        self.files = [str(Path(p)) for p in opts.files]
        metas = [read_meta(p) for p in self.files]
        self._keys = _drop_string_keys(metas[0].keys, self.files[0])
        for path, meta in zip(self.files[1:], metas[1:]):
            self._check_same_keys(path, meta)
        self._file_of = np.concatenate([np.full(len(m.tags), i) for i, m in enumerate(metas)])
        self._lens = np.concatenate([m.seq_lens for m in metas])
        # Start of each sequence within its own file, per column.
        self._starts = np.concatenate([np.cumsum(m.seq_lens, axis=0) - m.seq_lens for m in metas])
        self._tags = [t for m in metas for t in m.tags]
        self._handles: dict[int, tuple[h5py.File, dict[str, h5py.Dataset]]] = {}
        self._pid = os.getpid()

    def _check_same_keys(self, path: str, meta: _FileMeta) -> None:
        # RETURNN allows later files to hold more keys (it drops them) but not fewer or other dims.
        for name, key in self._keys.items():
            other = meta.keys.get(name)
            if other is None:
                raise DataError(f"HDF file {path}: key {name!r} missing (it is in {self.files[0]})")
            if (other.spec.dim, other.spec.sparse, other.column) != (
                key.spec.dim,
                key.spec.sparse,
                key.column,
            ):
                raise DataError(
                    f"HDF file {path}: key {name!r} has dim {other.spec.dim}, sparse "
                    f"{other.spec.sparse}; {self.files[0]} has {key.spec.dim}, {key.spec.sparse}"
                )

    def __getstate__(self):
        # h5py handles cannot cross process boundaries: each DataLoader worker opens its own.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    @property
    def num_seqs(self) -> int:
        return len(self._tags)

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        return {name: key.spec for name, key in self._keys.items()}

    def seq_tag(self, idx: int) -> str:
        return self._tags[idx]

    def seq_len(self, idx: int) -> dict[str, int]:
        return {name: int(self._lens[idx, key.column]) for name, key in self._keys.items()}

    def get_seq(self, idx: int) -> dict[str, np.ndarray]:
        file_idx = int(self._file_of[idx])
        datasets = self._open(file_idx)
        out = {}
        for name, key in self._keys.items():
            start, n = int(self._starts[idx, key.column]), int(self._lens[idx, key.column])
            arr = datasets[name][start : start + n]
            if not key.spec.sparse and arr.ndim == 1:  # dense values without a feature axis: [T, 1]
                arr = arr[:, None]
            out[name] = arr
        return out

    def _open(self, file_idx: int) -> dict[str, h5py.Dataset]:
        if self._pid != os.getpid():  # forked without pickling: never share the parent's handles
            self._handles, self._pid = {}, os.getpid()
        if file_idx not in self._handles:
            path = self.files[file_idx]
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise DataError(f"HDF file {path}: cannot open: {exc}") from None
            # h5py Dataset objects are cached: looking them up per access is slow (as RETURNN notes).
            self._handles[file_idx] = (f, {name: f[key.h5_path] for name, key in self._keys.items()})
        return self._handles[file_idx][1]


class HDFWriter:
    """Writes sequences to a RETURNN HDF file that RETURNN's HDFDataset (and `hdf`) read back unchanged.

    Key `data` goes to `inputs`, every other key to `targets/data/<key>`. The keys are fixed by the first
    sequence. `specs` gives dims and vocabularies; a sparse key without a spec gets dim max(label) + 1.
    The file is written under a temp name and renamed by `close()`, so a crash never leaves half a file.
    """

    FLUSH_BYTES = 16 << 20

    def __init__(self, path: str | Path, specs: dict[str, DataSpec] | None = None):
        self.path = Path(path)
        self.specs = dict(specs or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file = h5py.File(self._tmp, "w")
        self._keys: list[str] | None = None
        self._buffers: dict[str, list[np.ndarray]] = {}
        self._buffered = 0
        self._lens: list[list[int]] = []
        self._tags: list[str] = []
        self._max_label: dict[str, int] = {}

    def __enter__(self) -> HDFWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def insert(self, tag: str, seq: dict[str, np.ndarray]) -> None:
        """Append one sequence: per key an array with time first ([T] sparse, [T, F] dense)."""
        if self._keys is None:
            self._keys = (["data"] if "data" in seq else []) + sorted(k for k in seq if k != "data")
        if set(seq) != set(self._keys):
            raise DataError(f"{self.path}: sequence {tag!r} has keys {sorted(seq)}, expected {self._keys}")
        lens = []
        for key in self._keys:
            arr = np.asarray(seq[key])
            if arr.ndim == 0:
                raise DataError(f"{self.path}: sequence {tag!r} key {key!r} has no time axis")
            self._buffers.setdefault(key, []).append(arr)
            self._buffered += arr.nbytes
            if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer) and len(arr):
                self._max_label[key] = max(self._max_label.get(key, -1), int(arr.max()))
            lens.append(len(arr))
        if self._keys == ["data"]:
            lens.append(0)  # RETURNN assumes a dummy 'classes' column when a file has no targets
        self._lens.append(lens)
        self._tags.append(tag)
        if self._buffered > self.FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        for key, arrays in self._buffers.items():
            if not arrays:
                continue
            new = np.concatenate(arrays)
            h5_path = "inputs" if key == "data" else f"targets/data/{key}"
            if h5_path not in self._file:
                self._file.create_dataset(h5_path, data=new, maxshape=(None, *new.shape[1:]), chunks=True)
            else:
                ds = self._file[h5_path]
                if ds.shape[1:] != new.shape[1:]:
                    raise DataError(
                        f"{self.path}: key {key!r} has feature shape {new.shape[1:]}, "
                        f"earlier sequences {ds.shape[1:]}"
                    )
                ds.resize(ds.shape[0] + len(new), axis=0)
                ds[-len(new) :] = new
            arrays.clear()
        self._buffered = 0

    def _dim(self, key: str, ds: h5py.Dataset) -> int:
        if key in self.specs:
            return self.specs[key].dim
        if ds.ndim >= 2:
            return int(ds.shape[-1])
        return self._max_label.get(key, 0) + 1 if np.issubdtype(ds.dtype, np.integer) else 1

    def close(self) -> None:
        """Write lengths, tags and attributes, and move the file to its name."""
        if self._file is None:
            return
        self._flush()
        f = self._file
        keys = self._keys or []
        columns = len(keys) + (keys == ["data"]) if keys else 2
        f.create_dataset("seqLengths", data=np.asarray(self._lens, dtype=np.int32).reshape(-1, columns))
        f.create_dataset("seqTags", data=self._tags, dtype=h5py.string_dtype())
        data = f.get("inputs")
        in_dim = self._dim("data", data) if data is not None else 1
        f.attrs.update(
            numSeqs=len(self._tags),
            numTimesteps=len(data) if data is not None else 0,
            inputPattSize=in_dim,
            numLabels=in_dim,
            numDims=1,
        )
        _write_strings(f, "labels", self._vocab("data", in_dim))
        targets = [k for k in keys if k != "data"]
        if targets:
            for group in ("targets/data", "targets/size", "targets/labels"):
                f.require_group(group)
            for key in targets:
                ds = f[f"targets/data/{key}"]
                dim = self._dim(key, ds)
                f["targets/size"].attrs[key] = np.array([dim, ds.ndim], dtype=np.int32)
                if self._vocab(key, dim):
                    _write_strings(f, f"targets/labels/{key}", self._vocab(key, dim))
        f.close()
        self._file = None
        os.replace(self._tmp, self.path)

    def _vocab(self, key: str, dim: int) -> list[str]:
        spec = self.specs.get(key)
        return list(spec.vocab) if spec is not None and spec.vocab and len(spec.vocab) == dim else []

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


def _write_strings(f: h5py.File, name: str, strings: list[str]) -> None:
    # Fixed-size byte strings, as RETURNN's hdf5_strings writes labels (empty: `S5` of length 0).
    encoded = [s.encode("utf8") for s in strings]
    width = max((len(s) for s in encoded), default=5) or 1
    f.create_dataset(name, data=np.array(encoded, dtype=f"S{width}") if encoded else np.zeros(0, f"S{width}"))

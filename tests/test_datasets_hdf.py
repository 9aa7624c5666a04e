import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from seqtrain.config import BatchingConfig
from seqtrain.data import iterate_batches
from seqtrain.datasets import DataSpec, build_dataset
from seqtrain.datasets.hdf import HDFWriter
from seqtrain.errors import ConfigError, DataError
from tests.conftest import SEQ_ORDERINGS, SHARED_DATA, check_epoch_order

HDF = SHARED_DATA / "hdf"
FILES = ["an4_dev.hdf", "an4_train.hdf", "fsdd_dev.hdf", "fsdd_train.hdf"]
MODES = SEQ_ORDERINGS

needs_data = pytest.mark.skipif(not HDF.is_dir(), reason=f"shared test data not found at {HDF}")


def hdf(*files, **opts):
    return build_dataset({"class": "hdf", "files": [str(f) for f in files], **opts}, "dataset.train")


def h5py_seqs(path):
    """The sequences of a RETURNN HDF file, cut by hand with h5py."""
    with h5py.File(path, "r") as f:
        lens = f["seqLengths"][...]
        starts = np.cumsum(lens, axis=0) - lens
        inputs, classes = f["inputs"][...], f["targets/data/classes"][...]
        tags = [t.decode() if isinstance(t, bytes) else t for t in f["seqTags"][...]]
    return [
        (
            tags[i],
            inputs[starts[i, 0] : starts[i, 0] + lens[i, 0]],
            classes[starts[i, 1] : starts[i, 1] + lens[i, 1]],
        )
        for i in range(len(tags))
    ]


@needs_data
@pytest.mark.parametrize("name", FILES)
def test_reads_shared_files_as_h5py(name):
    ds = hdf(HDF / name)
    vocab = json.loads((HDF / "vocab.json").read_text())
    assert ds.extern_data == {
        "data": DataSpec(80, sparse=False, dtype="float32"),
        "classes": DataSpec(28, sparse=True, dtype="int32", vocab=sorted(vocab, key=vocab.get)),
    }
    expected = h5py_seqs(HDF / name)
    assert ds.num_seqs == len(expected)
    for i in range(0, ds.num_seqs, max(ds.num_seqs // 25, 1)):
        tag, data, classes = expected[i]
        seq = ds.get_seq(i)
        assert ds.seq_tag(i) == tag
        assert ds.seq_len(i) == {"data": len(data), "classes": len(classes)}
        assert seq["data"].dtype == np.float32 and np.array_equal(seq["data"], data)
        assert seq["classes"].dtype == np.int32 and np.array_equal(seq["classes"], classes)


@needs_data
def test_values_from_the_readme():
    ds = hdf(HDF / "fsdd_train.hdf", HDF / "an4_dev.hdf")
    labels = ds.extern_data["classes"].vocab
    assert ds.num_seqs == 502 and ds.seq_tag(0) == "train-clean-mini/9001-1-0000"
    assert (
        ds.get_seq(0)["data"].shape == (27, 80)
        and "".join(labels[i] for i in ds.get_seq(0)["classes"]) == "ZERO"
    )
    assert "".join(labels[i] for i in ds.get_seq(501)["classes"]) == "OCTOBER TWENTY FOUR NINETEEN SEVENTY"
    assert ds.seq_len(501) == {"data": 227, "classes": 36}


@needs_data
def test_same_as_returnn_hdf_dataset():
    hdf_mod = pytest.importorskip("returnn.datasets.hdf")
    files = [str(HDF / n) for n in ("an4_dev.hdf", "fsdd_dev.hdf", "an4_train.hdf")]
    ref = hdf_mod.HDFDataset(files=files)
    ref.initialize()
    ref.init_seq_order(1)
    ref.load_seqs(0, ref.num_seqs)
    ds = hdf(*files)
    assert ds.num_seqs == ref.num_seqs and set(ds.extern_data) == set(ref.get_data_keys())
    for i in range(ds.num_seqs):
        assert ds.seq_tag(i) == ref.get_tag(i)
        for key, value in ds.get_seq(i).items():
            assert np.array_equal(value, ref.get_data(i, key))


def roundtrip_seqs():
    rng = np.random.RandomState(0)
    out = []
    for i, n in enumerate([5, 1, 9]):
        out.append(
            (
                f"corpus/seq-{i}",
                {
                    "data": rng.randn(n, 3).astype(np.float32),
                    "classes": rng.randint(0, 4, size=n + 2).astype(np.int32),
                    "align": (np.arange(n) % 7).astype(np.int16),
                    "score": rng.randn(2, 2).astype(np.float64),
                },
            )
        )
    return out


def test_writer_roundtrip(tmp_path):
    specs = {"classes": DataSpec(6, sparse=True, dtype="int32", vocab=list("abcdef"))}
    with HDFWriter(tmp_path / "out.hdf", specs) as w:
        for tag, seq in roundtrip_seqs():
            w.insert(tag, seq)
    ds = hdf(tmp_path / "out.hdf")
    assert ds.extern_data == {
        "data": DataSpec(3, dtype="float32"),
        "align": DataSpec(7, sparse=True, dtype="int16"),  # dim from the largest label
        "classes": DataSpec(6, sparse=True, dtype="int32", vocab=list("abcdef")),
        "score": DataSpec(2, dtype="float64"),
    }
    for i, (tag, seq) in enumerate(roundtrip_seqs()):
        assert ds.seq_tag(i) == tag
        got = ds.get_seq(i)
        assert all(np.array_equal(got[k], v) and got[k].dtype == v.dtype for k, v in seq.items())
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed


def test_writer_read_back_by_returnn(tmp_path):
    hdf_mod = pytest.importorskip("returnn.datasets.hdf")
    cases = {
        "all.hdf": roundtrip_seqs(),
        "sparse_inputs_only.hdf": [
            ("a", {"data": np.array([1, 2, 3], np.int32)}),
            ("b", {"data": np.array([4], np.int32)}),
        ],
        "targets_only.hdf": [
            ("a", {"classes": np.array([3, 1], np.int32), "feat": np.ones((4, 2), np.float16)})
        ],
    }
    for name, seqs in cases.items():
        with HDFWriter(tmp_path / name) as w:
            for tag, seq in seqs:
                w.insert(tag, seq)
        ref = hdf_mod.HDFDataset(files=[str(tmp_path / name)])
        ref.initialize()
        ref.init_seq_order(1)
        ref.load_seqs(0, ref.num_seqs)
        ours = hdf(tmp_path / name)
        assert set(ref.get_data_keys()) == set(seqs[0][1]) == set(ours.extern_data)
        for key, spec in ours.extern_data.items():
            assert ref.num_outputs[key][0] == spec.dim and ref.is_data_sparse(key) == spec.sparse, (name, key)
        for i, (tag, seq) in enumerate(seqs):
            assert ref.get_tag(i) == tag
            for key, value in seq.items():
                assert (
                    np.array_equal(ref.get_data(i, key), value) and ref.get_data(i, key).dtype == value.dtype
                )


@needs_data
def test_writer_rewrites_a_returnn_file_with_the_same_structure(tmp_path):
    src = hdf(HDF / "an4_dev.hdf")
    with HDFWriter(tmp_path / "copy.hdf", src.extern_data) as w:
        for i in range(src.num_seqs):
            w.insert(src.seq_tag(i), src.get_seq(i))
    with h5py.File(HDF / "an4_dev.hdf") as a, h5py.File(tmp_path / "copy.hdf") as b:
        assert dict(a.attrs) == dict(b.attrs)
        for name in ("inputs", "seqLengths", "targets/data/classes", "targets/labels/classes"):
            assert np.array_equal(a[name][...], b[name][...]), name
        assert list(a["targets/size"].attrs["classes"]) == list(b["targets/size"].attrs["classes"])
        assert [t.decode() for t in b["seqTags"][...]] == [t.decode() for t in a["seqTags"][...]]


def test_writer_abort_leaves_no_file(tmp_path):
    with pytest.raises(DataError, match="keys"):
        with HDFWriter(tmp_path / "x.hdf") as w:
            w.insert("a", {"data": np.zeros((2, 3), np.float32)})
            w.insert("b", {"data": np.zeros((2, 3), np.float32), "classes": np.zeros(1, np.int32)})
    assert list(tmp_path.iterdir()) == []


@needs_data
def test_lengths_without_loading_and_pickling():
    ds = hdf(HDF / "fsdd_dev.hdf", seq_ordering="sorted")
    ds.init_epoch(1)
    assert ds._handles == {}  # sorting read only seqLengths (at init), no file is open
    ds.get_seq(0)
    clone = pickle.loads(pickle.dumps(ds))  # e.g. into a DataLoader worker: it opens its own handle
    assert clone._handles == {} and np.array_equal(clone.get_seq(3)["data"], ds.get_seq(3)["data"])


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.hdf not found"):
        hdf(tmp_path / "missing.hdf")
    (tmp_path / "bad.hdf").write_text("not hdf")
    with pytest.raises(DataError, match="bad.hdf: not a readable RETURNN HDF"):
        hdf(tmp_path / "bad.hdf")
    with pytest.raises(ConfigError, match="dataset.train.files"):
        hdf()
    for name, seq in [
        ("a.hdf", {"data": np.zeros((2, 3), np.float32)}),
        ("b.hdf", {"data": np.zeros((2, 4), np.float32)}),
    ]:
        with HDFWriter(tmp_path / name) as w:
            w.insert("t", seq)
    with pytest.raises(DataError, match="b.hdf: key 'data' has dim 4"):
        hdf(tmp_path / "a.hdf", tmp_path / "b.hdf")


@needs_data
@pytest.mark.parametrize("parts", [1, 3])
def test_every_seq_ordering_and_partition(parts):
    for mode in MODES:
        ds = hdf(HDF / "an4_train.hdf", HDF / "fsdd_dev.hdf", seq_ordering=mode, partition_epoch=parts)
        check_epoch_order(ds, mode, parts)


def batches(ds, workers, epochs=(1, 2)):
    cfg = BatchingConfig(batch_size=2000, max_seqs=16, num_workers=workers)
    return [
        (b.tags, {k: v.clone() for k, v in b.data.items()})
        for e in epochs
        for b in iterate_batches(ds, cfg, e, train=True)
    ]


@needs_data
def test_same_batches_with_workers():
    ds = hdf(HDF / "fsdd_dev.hdf", seq_ordering="laplace:.20", partition_epoch=2)
    ref, got = batches(ds, 0), batches(ds, 2)
    assert [t for t, _ in ref] == [t for t, _ in got] and len(ref) > 2
    assert all(torch.equal(a[k], b[k]) for (_, a), (_, b) in zip(ref, got) for k in a)

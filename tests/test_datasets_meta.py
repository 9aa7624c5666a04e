import numpy as np
import pytest

from seqtrain.datasets import build_dataset
from seqtrain.errors import ConfigError, DataError
from tests.conftest import SEQ_ORDERINGS, SHARED_DATA, assert_same_batches_with_workers, check_epoch_order

HDF = SHARED_DATA / "hdf"
MODES = SEQ_ORDERINGS

needs_data = pytest.mark.skipif(not HDF.is_dir(), reason=f"shared test data not found at {SHARED_DATA}")


def feat(*names, **opts):
    return {"class": "hdf", "files": [str(HDF / n) for n in names], **opts}


def text(tmp_path, subsets=("dev-clean-mini",)):
    return {
        "class": "librispeech",
        "root": str(SHARED_DATA / "fsdd-mini"),
        "subsets": list(subsets),
        "features": "raw",
        "vocab_file": str(HDF / "vocab.json"),
        "cache_dir": str(tmp_path),
    }


def meta(datasets, data_map, **opts):
    return build_dataset(
        {"class": "meta", "datasets": datasets, "data_map": data_map, **opts}, "dataset.train"
    )


@needs_data
def test_joins_hdf_features_with_librispeech_text_by_tag(tmp_path):
    # The text corpus has 600 utterances in another order; the HDF file holds the 100 dev ones.
    ds = meta(
        {"feat": feat("fsdd_dev.hdf"), "text": text(tmp_path, ["train-clean-mini", "dev-clean-mini"])},
        {"data": ["feat", "data"], "classes": ["text", "classes"]},
    )
    ref = build_dataset(feat("fsdd_dev.hdf"), "ref")
    assert ds.num_seqs == 100 and ds.extern_data == ref.extern_data
    for i in (0, 42, 99):
        seq, expected = ds.get_seq(i), ref.get_seq(i)
        assert ds.seq_tag(i) == ref.seq_tag(i)
        assert np.array_equal(seq["data"], expected["data"])
        assert np.array_equal(seq["classes"], expected["classes"])  # same vocab: RETURNN's file == ours
        assert ds.seq_len(i) == ref.seq_len(i)


@needs_data
def test_missing_tag_is_named(tmp_path):
    with pytest.raises(
        DataError,
        match="sequence 'dev-clean-mini/8003-1-0000' of dataset 'feat' is missing in dataset 'text'",
    ):
        meta(
            {"feat": feat("fsdd_dev.hdf", "an4_dev.hdf"), "text": text(tmp_path)},
            {"data": ["feat", "data"], "classes": ["text", "classes"]},
        )


@needs_data
def test_seq_order_control_dataset(tmp_path):
    datasets = {"feat": feat("fsdd_dev.hdf"), "text": text(tmp_path, ["dev-clean-mini"])}
    datasets["text"].update(seq_ordering="sorted", partition_epoch=2)
    ds = meta(
        datasets, {"data": ["feat", "data"], "classes": ["text", "classes"]}, seq_order_control_dataset="text"
    )
    control = build_dataset(datasets["text"], "control")
    for epoch in (1, 2):
        ds.init_epoch(epoch)
        control.init_epoch(epoch)
        assert [ds.seq_tag(i) for i in ds.seq_order] == [control.seq_tag(i) for i in control.seq_order]
    with pytest.raises(ConfigError, match="set them there"):
        meta(datasets, {"data": ["feat", "data"]}, seq_order_control_dataset="feat", seq_ordering="random")


def test_config_errors():
    copy = {"class": "copy_task", "num_seqs": 5}
    with pytest.raises(ConfigError, match=r"dataset.train.data_map.classes: unknown dataset 'txt'"):
        meta({"a": copy}, {"data": ["a", "data"], "classes": ["txt", "classes"]})
    with pytest.raises(
        ConfigError, match=r"data_map.classes: dataset 'a' has no key 'orth'; known: data, classes"
    ):
        meta({"a": copy}, {"data": ["a", "data"], "classes": ["a", "orth"]})
    with pytest.raises(ConfigError, match="set seq_order_control_dataset"):
        meta({"a": copy}, {"classes": ["a", "classes"]})
    with pytest.raises(ConfigError, match=r"dataset.train.datasets.a.class: unknown dataset 'nope'"):
        meta({"a": {"class": "nope"}}, {"data": ["a", "data"]})


def copy_and_reverse(task_opts=None, **opts):
    task = {"class": "copy_task", "num_seqs": 40, "max_len": 30, **(task_opts or {})}
    return meta(
        {"copy": task, "rev": {**task, "reverse": True}},
        {"data": ["copy", "data"], "classes": ["rev", "classes"]},
        **opts,
    )


def test_generated_sub_datasets_follow_the_epoch():
    ds = copy_and_reverse()
    firsts = []
    for epoch in (1, 2):
        ds.init_epoch(epoch)
        seq = ds.get_seq(0)
        assert np.array_equal(seq["classes"], seq["data"][::-1])  # same seed: same sequences, one reversed
        firsts.append(seq["data"])
    assert not np.array_equal(firsts[0], firsts[1]) or len(firsts[0]) == 1


@pytest.mark.parametrize("parts", [1, 3])
def test_every_seq_ordering_and_partition(parts):
    for mode in MODES:
        # Sub-datasets keep their own seeds: fixed here, so the sub-epochs see one corpus.
        ds = copy_and_reverse({"fixed_random_seed": 5}, seq_ordering=mode, partition_epoch=parts)
        check_epoch_order(ds, mode, parts)


@needs_data
def test_same_batches_with_workers(tmp_path):
    ds = meta(
        {"feat": feat("fsdd_dev.hdf"), "text": text(tmp_path)},
        {"data": ["feat", "data"], "classes": ["text", "classes"]},
        seq_ordering="random",
        partition_epoch=2,
    )
    assert_same_batches_with_workers(ds, 1000, 16, (1, 2))


@needs_data
@pytest.mark.parametrize(
    "name", ["hdf_fsdd", "librispeech_fsdd", "ptb", "tinyshakespeare", "copy", "reverse", "meta_fsdd"]
)
def test_shipped_dataset_configs_build(name, monkeypatch, tmp_path):
    """Each conf/dataset/*.yaml of this issue composes and builds its datasets (paths via $SEQTRAIN_DATA)."""
    from conftest import compose

    monkeypatch.setenv("SEQTRAIN_DATA", str(SHARED_DATA))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cfg = compose(f"dataset={name}")
    for split in ("train", "dev"):
        ds = build_dataset(getattr(cfg.dataset, split), f"dataset.{split}")
        if ds is None:  # meta_fsdd has no dev
            continue
        ds.init_epoch(1)
        assert ds.num_seqs > 0 and set(ds.get_seq(int(ds.seq_order[0]))) == set(ds.extern_data)
    if name == "reverse":
        seq = ds.get_seq(0)
        assert np.array_equal(seq["classes"], seq["data"][::-1])

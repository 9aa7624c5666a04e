import pickle

import numpy as np
import pytest
import soundfile as sf

from seqtrain.datasets import build_dataset
from seqtrain.datasets.features import FbankSettings, log_mel_fbank
from seqtrain.errors import ConfigError, DataError
from tests.conftest import SEQ_ORDERINGS, SHARED_DATA, assert_same_batches_with_workers, check_epoch_order

FSDD, AN4, TTS = SHARED_DATA / "fsdd-mini", SHARED_DATA / "an4-mini", SHARED_DATA / "tts-mini"
MODES = SEQ_ORDERINGS

needs_data = pytest.mark.skipif(not FSDD.is_dir(), reason=f"shared test data not found at {SHARED_DATA}")


def libri(root, subsets, tmp_path, **opts):
    opts.setdefault("cache_dir", str(tmp_path / "cache"))
    return build_dataset(
        {"class": "librispeech", "root": str(root), "subsets": subsets, **opts}, "dataset.train"
    )


def transcripts(root, subset):
    out = {}
    for trans in sorted((root / subset).glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            out[f"{subset}/{utt}"] = text
    return out


@needs_data
def test_fsdd_chars(tmp_path):
    ds = libri(FSDD, ["dev-clean-mini"], tmp_path)
    texts = transcripts(FSDD, "dev-clean-mini")
    assert ds.num_seqs == 100 and sorted(ds.seq_tag(i) for i in range(100)) == sorted(texts)
    assert ds.seq_tag(0) == "dev-clean-mini/9005-1-0000"
    labels = ds.extern_data["classes"].vocab
    assert labels == sorted(set("".join(texts.values())))  # derived from the transcripts, sorted
    assert (tmp_path / "cache" / "vocab.chars.json").is_file()
    for i in (0, 57, 99):
        seq = ds.get_seq(i)
        assert "".join(labels[c] for c in seq["classes"]) == texts[ds.seq_tag(i)]
        assert (
            seq["data"].dtype == np.float32
            and seq["data"].shape[1] == 80
            and seq["classes"].dtype == np.int32
        )
        assert ds.seq_len(i) == {"data": len(seq["data"]), "classes": len(seq["classes"])}
        wave, _ = sf.read(
            FSDD / "dev-clean-mini" / "9005" / "1" / f"{ds.seq_tag(i).split('/')[1]}.flac", dtype="float32"
        )
        assert np.array_equal(seq["data"], log_mel_fbank(wave, FbankSettings()))


@needs_data
def test_several_subsets_and_relative_root(tmp_path, monkeypatch):
    monkeypatch.chdir(SHARED_DATA)
    ds = libri("fsdd-mini", ["train-clean-mini", "dev-clean-mini"], tmp_path)
    assert ds.num_seqs == 600 and ds.seq_tag(500) == "dev-clean-mini/9005-1-0000"
    assert ds.seq_tag(1) == "train-clean-mini/9001-1-0001"


@needs_data
def test_dev_uses_train_vocab_and_global_stats(tmp_path):
    libri(AN4, ["train-clean-mini"], tmp_path)
    with pytest.raises(
        DataError, match="sequence dev-clean-mini/8004-1-0000: symbol 'B' is not in the vocabulary"
    ):
        libri(AN4, ["dev-clean-mini"], tmp_path, train_subsets=["train-clean-mini"])  # an4's train lacks B
    vocab = str(SHARED_DATA / "hdf" / "vocab.json")  # a given vocabulary: " ", "'", A-Z
    train = libri(AN4, ["train-clean-mini"], tmp_path, norm="global", vocab_file=vocab)
    dev = libri(
        AN4, ["dev-clean-mini"], tmp_path, norm="global", train_subsets=["train-clean-mini"], vocab_file=vocab
    )
    assert len(dev.extern_data["classes"].vocab) == 28
    assert dev.extern_data["classes"].vocab == train.extern_data["classes"].vocab
    assert np.array_equal(dev.norm_stats.mean, train.norm_stats.mean)
    frames = np.concatenate([train.get_seq(i)["data"] for i in range(train.num_seqs)])
    assert np.allclose(frames.mean(0), 0, atol=1e-3) and np.allclose(frames.std(0), 1, atol=1e-2)
    stats_file = tmp_path / "stats.npz"
    libri(AN4, ["train-clean-mini"], tmp_path, norm="global", norm_stats_file=str(stats_file))
    assert stats_file.is_file()


@needs_data
def test_utterance_norm_and_raw(tmp_path):
    ds = libri(AN4, ["dev-clean-mini"], tmp_path, norm="utterance", add_raw=True)
    seq = ds.get_seq(1)
    assert np.allclose(seq["data"].mean(0), 0, atol=1e-4)
    assert seq["raw"].shape == (ds.seq_len(1)["raw"], 1) and ds.extern_data["raw"].dim == 1
    raw = libri(AN4, ["dev-clean-mini"], tmp_path, features="raw")
    assert np.array_equal(raw.get_seq(1)["data"], seq["raw"]) and raw.seq_len(1)["data"] == len(seq["raw"])


@needs_data
def test_bpe_trained_from_transcripts(tmp_path):
    import sentencepiece as spm

    model = tmp_path / "bpe" / "bpe.model"
    ds = libri(
        TTS,
        ["dev-clean-mini"],
        tmp_path,
        targets="bpe",
        bpe_size=120,
        bpe_model=str(model),
        train_subsets=["train-clean-mini"],
    )
    assert model.is_file() and len(ds.extern_data["classes"].vocab) == 120
    sp = spm.SentencePieceProcessor(model_file=str(model))
    texts = transcripts(TTS, "dev-clean-mini")
    for i in range(0, ds.num_seqs, 7):
        classes = ds.get_seq(i)["classes"]
        assert sp.decode(classes.tolist()) == texts[ds.seq_tag(i)] and len(classes) < len(
            texts[ds.seq_tag(i)]
        )
    clone = pickle.loads(pickle.dumps(ds))  # the processor is reloaded in a worker
    assert np.array_equal(clone.get_seq(3)["classes"], ds.get_seq(3)["classes"])


def make_corpus(root, utts=("1-2-0000", "1-2-0001"), text="HELLO"):
    chapter = root / "train" / "1" / "2"
    chapter.mkdir(parents=True)
    for i, utt in enumerate(utts):
        sf.write(chapter / f"{utt}.flac", np.sin(np.arange(4000 + 800 * i) * 0.05) * 0.3, 16000)
    (chapter / "1-2.trans.txt").write_text("".join(f"{u} {text}\n" for u in utts))
    return chapter


def test_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="corpus folder .*nowhere not found"):
        libri(tmp_path / "nowhere", ["train"], tmp_path)
    chapter = make_corpus(tmp_path / "c")
    with pytest.raises(DataError, match=r"subset folder .*c/dev not found; .* has: train"):
        libri(tmp_path / "c", ["dev"], tmp_path)
    with pytest.raises(ConfigError, match="dataset.train.targets"):
        libri(tmp_path / "c", ["train"], tmp_path, targets="words")
    (chapter / "1-2-0001.flac").rename(chapter / "1-2-0009.flac")
    with pytest.raises(DataError, match=r"1-2-0001.flac: audio missing for its transcript line"):
        libri(tmp_path / "c", ["train"], tmp_path)
    (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO\n1-2-0009 HELLO\n1-2-0010 HI\n")
    sf.write(chapter / "1-2-0010.flac", np.zeros(100), 16000)
    (chapter / "1-2-0011.flac").write_bytes(b"")
    with pytest.raises(DataError, match=r"1-2-0011.flac: no transcript line for it"):
        libri(tmp_path / "c", ["train"], tmp_path)


def test_corrupt_audio_and_sample_rate(tmp_path):
    chapter = make_corpus(tmp_path / "c")
    (chapter / "1-2-0001.flac").write_bytes(b"fLaC garbage")
    ds = libri(tmp_path / "c", ["train"], tmp_path)
    assert ds.get_seq(0)["data"].shape == (1 + (4000 - 400) // 160, 80)
    with pytest.raises(DataError, match=r"1-2-0001.flac: cannot read audio"):
        ds.get_seq(1)
    with pytest.raises(DataError, match=r"1-2-0001.flac: cannot read audio header"):
        ds.seq_len(0)
    sf.write(chapter / "1-2-0001.flac", np.zeros(1000), 8000)
    with pytest.raises(DataError, match=r"1-2-0001.flac: sample rate 8000, expected 16000"):
        libri(tmp_path / "c", ["train"], tmp_path).get_seq(1)


def test_short_and_empty_transcripts(tmp_path):
    chapter = make_corpus(tmp_path / "c")
    (chapter / "1-2.trans.txt").write_text("1-2-0000 HELLO\n1-2-0001 \n")
    with pytest.raises(DataError, match=r"1-2.trans.txt:2: empty transcript for 1-2-0001"):
        libri(tmp_path / "c", ["train"], tmp_path)


@needs_data
@pytest.mark.parametrize("parts", [1, 3])
def test_every_seq_ordering_and_partition(tmp_path, parts):
    for mode in MODES:
        ds = libri(
            AN4, ["train-clean-mini", "dev-clean-mini"], tmp_path, seq_ordering=mode, partition_epoch=parts
        )
        check_epoch_order(ds, mode, parts)


@needs_data
def test_same_batches_with_workers(tmp_path):
    ds = libri(
        FSDD, ["dev-clean-mini"], tmp_path, seq_ordering="laplace:.25", partition_epoch=2, norm="utterance"
    )
    assert_same_batches_with_workers(ds, 1000, 16, (1, 2))


def test_speed_perturbation_per_sequence_and_epoch(tmp_path):
    make_corpus(tmp_path / "c", utts=tuple(f"1-2-{i:04d}" for i in range(12)))
    ds = libri(tmp_path / "c", ["train"], tmp_path, speed_perturbation=[0.9, 1.0, 1.1], add_raw=True)
    plain = libri(tmp_path / "c", ["train"], tmp_path)
    for epoch in (1, 2):
        ds.init_epoch(epoch)
        speeds = [ds.speed(i) for i in range(ds.num_seqs)]
        assert set(speeds) == {0.9, 1.0, 1.1}
        for i, speed in enumerate(speeds):
            n = 4000 + 800 * i  # make_corpus's lengths
            seq, lens = ds.get_seq(i), ds.seq_len(i)
            assert len(seq["raw"]) == lens["raw"] == int(np.ceil(n / speed - 1e-9))
            assert len(seq["data"]) == lens["data"] == 1 + (lens["raw"] - 400) // 160
            if speed == 1.0:
                assert np.array_equal(seq["data"], plain.get_seq(i)["data"])
        assert ds.speed(0) == 1.0 or not np.array_equal(ds.get_seq(0)["data"], plain.get_seq(0)["data"])
    ds.init_epoch(1)
    first = [ds.speed(i) for i in range(ds.num_seqs)]
    assert first != speeds  # another draw in epoch 2
    clone = pickle.loads(pickle.dumps(ds))  # a worker's copy draws the same
    clone.init_epoch(2), ds.init_epoch(2)
    assert [clone.speed(i) for i in range(12)] == speeds
    assert np.array_equal(clone.get_seq(5)["data"], ds.get_seq(5)["data"])
    offset = libri(tmp_path / "c", ["train"], tmp_path, speed_perturbation=[0.9, 1.1], random_seed_offset=1)
    offset.init_epoch(1)
    assert [offset.speed(i) for i in range(12)] != first
    with pytest.raises(ConfigError, match=r"dataset.train.speed_perturbation: give speed factors"):
        libri(tmp_path / "c", ["train"], tmp_path, speed_perturbation=[0.0, 1.0])


@needs_data
def test_speed_perturbation_same_batches_with_workers(tmp_path):
    ds = libri(
        FSDD, ["dev-clean-mini"], tmp_path, seq_ordering="laplace:.25", speed_perturbation=[0.9, 1.0, 1.1]
    )
    assert_same_batches_with_workers(ds, 1000, 16, (1, 2))


@needs_data
@pytest.mark.parametrize("preset", ["fsdd", "tts"])
def test_presets_perturb_training_data_only(preset, tmp_path, monkeypatch):
    from tests.conftest import compose

    monkeypatch.setenv("SEQTRAIN_DATA", str(SHARED_DATA))
    cfg = compose(f"+experiment={preset}", f"+dataset.dev.cache_dir={tmp_path}")
    assert 1.1 in cfg.dataset.train["speed_perturbation"]
    dev = build_dataset(cfg.dataset.dev, "dataset.dev")
    assert dev.opts.speed_perturbation is None
    dev.init_epoch(1)
    one = dev.get_seq(3)["data"]
    dev.init_epoch(2)
    assert np.array_equal(one, dev.get_seq(3)["data"]) and dev.speed(3) == 1.0


def test_speaker_norm_and_mel_range(tmp_path):
    make_corpus(tmp_path / "c")
    other = tmp_path / "c" / "train" / "3" / "4"
    other.mkdir(parents=True)
    noise = np.random.default_rng(0).normal(scale=0.05, size=6000)
    for i in range(3):  # a louder speaker with another pitch, and some noise (no near-constant bands)
        wave = np.sin(np.arange(5000 + 300 * i) * 0.11) * 0.5 + noise[: 5000 + 300 * i]
        sf.write(other / f"3-4-000{i}.flac", wave, 16000)
    (other / "3-4.trans.txt").write_text("".join(f"3-4-000{i} HI\n" for i in range(3)))
    ds = libri(tmp_path / "c", ["train"], tmp_path, norm="speaker", fmax=4000.0, fmin=20.0)
    assert sorted(ds.speaker_stats) == ["1", "3"]
    settings = FbankSettings(fmin=20.0, fmax=4000.0)
    for speaker, idxs in (("1", [0, 1]), ("3", [2, 3, 4])):
        raw = [log_mel_fbank(sf.read(ds.utts[i].path, dtype="float32")[0], settings) for i in idxs]
        raw = [r.astype(np.float64) for r in raw]
        assert ds.speaker_stats[speaker].num_frames == sum(len(r) for r in raw)
        mean, std = np.concatenate(raw).mean(0), np.concatenate(raw).std(0)
        for i, feats in zip(idxs, raw):
            expected = (feats - mean) / np.sqrt(std**2 + 1e-5)
            # float32 statistics: bands of a pure tone are near constant, 1/std magnifies the rounding
            np.testing.assert_allclose(ds.get_seq(i)["data"], expected, atol=2e-3)
        normed = np.concatenate([ds.get_seq(i)["data"] for i in idxs])
        np.testing.assert_allclose(normed.mean(0), 0.0, atol=1e-4)
    # the statistics are cached: a second dataset reads them instead of computing them
    cached = libri(tmp_path / "c", ["train"], tmp_path, norm="speaker", fmax=4000.0, fmin=20.0)
    assert np.array_equal(cached.speaker_stats["3"].std, ds.speaker_stats["3"].std)
    # fmax: no mel band above 4 kHz, so a 6 kHz tone hardly shows
    tone = np.sin(2 * np.pi * 6000 * np.arange(4000) / 16000)
    assert log_mel_fbank(tone, settings).max() < log_mel_fbank(tone, FbankSettings()).max() - 5

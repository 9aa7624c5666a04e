import gzip

import numpy as np
import pytest
import torch

from seqtrain.config import BatchingConfig
from seqtrain.data import iterate_batches
from seqtrain.datasets import build_dataset
from seqtrain.datasets.vocab import Vocabulary
from seqtrain.errors import ConfigError, DataError
from tests.conftest import SEQ_ORDERINGS, SHARED_DATA, check_epoch_order

PTB = SHARED_DATA / "lm" / "ptb"
SHAKESPEARE = SHARED_DATA / "lm" / "tinyshakespeare" / "input.txt"
MODES = SEQ_ORDERINGS

needs_data = pytest.mark.skipif(not PTB.is_dir(), reason=f"shared test data not found at {PTB}")


def lm(*files, **opts):
    return build_dataset({"class": "lm", "corpus_file": [str(f) for f in files], **opts}, "dataset.train")


@pytest.fixture
def small_ptb(tmp_path):
    """The first 300 lines of PTB's validation text."""
    if not PTB.is_dir():
        pytest.skip(f"shared test data not found at {PTB}")
    lines = (PTB / "ptb.valid.txt").read_text().splitlines(keepends=True)[:300]
    (tmp_path / "small.txt").write_text("".join(lines))
    return tmp_path / "small.txt"


@needs_data
def test_ptb_words_with_the_train_vocabulary(tmp_path):
    vocab_file = tmp_path / "vocab.txt"
    ds = lm(PTB / "ptb.valid.txt", vocab_file=str(vocab_file), vocab_build_from=[str(PTB / "ptb.train.txt")])
    labels = ds.extern_data["classes"].vocab
    assert len(labels) == 10001 and labels[:3] == [
        "<s>",
        "</s>",
        "<unk>",
    ]  # PTB's 10k words (<unk> incl.) + 2
    assert ds.num_seqs == 3370 and ds.seq_tag(5) == "line-5"
    first = (PTB / "ptb.valid.txt").read_text().splitlines()[0].split()
    seq = ds.get_seq(0)
    assert [labels[i] for i in seq["classes"]] == first + ["</s>"]
    assert [labels[i] for i in seq["data"]] == ["<s>"] + first
    assert seq["data"].dtype == seq["classes"].dtype == np.int32
    assert ds.seq_len(0) == {"data": len(first) + 1, "classes": len(first) + 1}
    assert Vocabulary.load(vocab_file).labels == labels  # written, and reused as is
    again = lm(PTB / "ptb.test.txt", vocab_file=str(vocab_file))
    assert again.extern_data["classes"].vocab == labels


@needs_data
def test_ptb_train_token_count():
    ds = lm(PTB / "ptb.train.txt")
    assert ds.num_seqs == 42068
    assert sum(ds.seq_len(i)["classes"] for i in range(ds.num_seqs)) == 929589  # words + one end per line


@needs_data
def test_tinyshakespeare_characters():
    ds = lm(SHAKESPEARE, units="char")
    labels = ds.extern_data["data"].vocab
    assert len(labels) == 3 + 64  # 65 distinct characters in the file, less the newline
    assert "".join(labels[i] for i in ds.get_seq(0)["classes"][:-1]) == "First Citizen:"


def test_same_as_returnn_lm_dataset(small_ptb, tmp_path):
    lm_mod = pytest.importorskip("returnn.datasets.lm")
    ours = lm(small_ptb, vocab_file=str(tmp_path / "vocab"))
    ref = lm_mod.LmDataset(
        corpus_file=str(small_ptb),
        orth_symbols_map_file=str(tmp_path / "vocab"),
        word_based=True,
        seq_end_symbol="</s>",
        unknown_symbol="<unk>",
        add_delayed_seq_data=True,
        delayed_seq_data_start_symbol="<s>",
    )
    ref.initialize()
    ref.init_seq_order(1)
    ref.load_seqs(0, ours.num_seqs)
    assert ref.num_seqs == ours.num_seqs
    for i in range(ours.num_seqs):
        seq = ours.get_seq(i)
        assert ref.get_tag(i) == ours.seq_tag(i)
        assert np.array_equal(ref.get_data(i, "data"), seq["classes"])  # RETURNN's target is its `data`
        assert np.array_equal(ref.get_data(i, "delayed"), seq["data"])


def test_vocab_file_read_by_returnn(small_ptb, tmp_path):
    vocab_mod = pytest.importorskip("returnn.datasets.util.vocabulary")
    ours = lm(small_ptb, units="char", vocab_file=str(tmp_path / "chars"))
    ref = vocab_mod.Vocabulary(str(tmp_path / "chars"), unknown_label="<unk>")
    assert ref.labels == ours.vocab.labels


def test_gzip_and_unknown_symbols(small_ptb, tmp_path):
    with gzip.open(tmp_path / "small.txt.gz", "wt") as f:
        f.write(small_ptb.read_text())
    plain, zipped = lm(small_ptb), lm(tmp_path / "small.txt.gz")
    assert all(
        np.array_equal(plain.get_seq(i)["data"], zipped.get_seq(i)["data"]) for i in range(plain.num_seqs)
    )
    (tmp_path / "vocab").write_text("<s>\n</s>\n<unk>\nthe\n")
    unk = lm(small_ptb, vocab_file=str(tmp_path / "vocab"))
    assert set(unk.get_seq(0)["classes"].tolist()) <= {1, 2, 3}
    (tmp_path / "vocab2").write_text("<s>\n</s>\nthe\n")
    with pytest.raises(DataError, match=r"small.txt:1: symbol 'consumers' is not in the vocabulary"):
        lm(small_ptb, vocab_file=str(tmp_path / "vocab2"), unknown_symbol=None)


def test_no_end_symbol_and_empty_lines(tmp_path):
    (tmp_path / "t.txt").write_text("a b\n\n  c   a \n")
    ds = lm(tmp_path / "t.txt", seq_end_symbol=None)
    assert ds.num_seqs == 2 and ds.extern_data["data"].vocab == ["<s>", "<unk>", "a", "b", "c"]
    seq = ds.get_seq(1)
    assert seq["data"].tolist() == [0, 4] and seq["classes"].tolist() == [4, 2]
    kept = lm(tmp_path / "t.txt", skip_empty_lines=False)
    assert (
        kept.num_seqs == 3
        and kept.get_seq(1)["classes"].tolist() == [1]
        and kept.get_seq(1)["data"].tolist() == [0]
    )


def test_errors(tmp_path):
    with pytest.raises(DataError, match="nope.txt not found"):
        lm(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="dataset.train.units"):
        lm(tmp_path / "nope.txt", units="bytes")
    (tmp_path / "v").write_text('{"a": 0, "b": 2}')
    with pytest.raises(DataError, match="indices must be 0..1"):
        lm(tmp_path / "nope.txt", vocab_file=str(tmp_path / "v"))


@pytest.mark.parametrize("parts", [1, 3])
def test_every_seq_ordering_and_partition(small_ptb, parts):
    for mode in MODES:
        ds = lm(small_ptb, seq_ordering=mode, partition_epoch=parts)
        check_epoch_order(ds, mode, parts)


def batches(ds, workers):
    cfg = BatchingConfig(batch_size=800, max_seqs=32, num_workers=workers)
    return [
        (b.tags, {k: v.clone() for k, v in b.data.items()})
        for e in (1, 2)
        for b in iterate_batches(ds, cfg, e, train=True)
    ]


def test_same_batches_with_workers(small_ptb):
    ds = lm(small_ptb, seq_ordering="random", partition_epoch=2)
    ref, got = batches(ds, 0), batches(ds, 2)
    assert [t for t, _ in ref] == [t for t, _ in got] and len(ref) > 2
    assert all(torch.equal(a[k], b[k]) for (_, a), (_, b) in zip(ref, got) for k in a)


def test_line_fraction_splits_the_lines(small_ptb):
    full = lm(small_ptb)
    head, tail = lm(small_ptb, line_fraction=[0.0, 0.9]), lm(small_ptb, line_fraction=[0.9, 1.0])
    assert head.num_seqs + tail.num_seqs == full.num_seqs and head.num_seqs == round(0.9 * full.num_seqs)
    first_tail = tail.get_seq(0)["classes"]
    assert (first_tail == full.get_seq(head.num_seqs)["classes"]).all()
    with pytest.raises(ConfigError, match=r"dataset.train.line_fraction: expected \[from, to\]"):
        lm(small_ptb, line_fraction=[0.5, 0.2])


def test_blocks_across_lines_by_hand(tmp_path):
    (tmp_path / "t.txt").write_text("a b\nc\nd e f\n")
    # vocabulary: <s> 0, </s> 1, <unk> 2, a 3, b 4, c 5, d 6, e 7, f 8
    # targets a b </s> c </s> d e f </s>, inputs <s> a b <s> c <s> d e f (each line starts from <s>)
    ds = lm(tmp_path / "t.txt", sample_break_mode="none", tokens_per_sample=4)
    assert ds.num_seqs == 3 and ds.seq_tag(2) == "block-2"
    seqs = [ds.get_seq(i) for i in range(3)]
    assert [s["classes"].tolist() for s in seqs] == [[3, 4, 1, 5], [1, 6, 7, 8], [1]]
    assert [s["data"].tolist() for s in seqs] == [[0, 3, 4, 0], [5, 0, 6, 7], [8]]
    assert [ds.seq_len(i)["data"] for i in range(3)] == [4, 4, 1]
    assert all(s["data"].dtype == s["classes"].dtype == np.int32 for s in seqs)


def test_complete_lines_up_to_the_block_size(tmp_path):
    (tmp_path / "t.txt").write_text("a b\nc\nd e f\n")  # 3, 2 and 4 tokens with </s>
    four = lm(tmp_path / "t.txt", sample_break_mode="complete", tokens_per_sample=4)
    assert [four.get_seq(i)["classes"].tolist() for i in range(four.num_seqs)] == [
        [3, 4, 1],
        [5, 1],
        [6, 7, 8, 1],
    ]
    five = lm(tmp_path / "t.txt", sample_break_mode="complete", tokens_per_sample=5)
    assert [five.get_seq(i)["data"].tolist() for i in range(five.num_seqs)] == [[0, 3, 4, 0, 5], [0, 6, 7, 8]]
    one = lm(tmp_path / "t.txt", sample_break_mode="complete", tokens_per_sample=1)  # longer lines stay whole
    assert one.num_seqs == 3 and one.get_seq(2)["classes"].tolist() == [6, 7, 8, 1]


def test_blocks_are_the_lines_joined(small_ptb):
    lines = lm(small_ptb)
    blocks = lm(small_ptb, sample_break_mode="none", tokens_per_sample=35, seq_ordering="random")
    for key in ("data", "classes"):
        joined = np.concatenate([lines.get_seq(i)[key] for i in range(lines.num_seqs)])
        cut = [blocks.get_seq(i)[key] for i in range(blocks.num_seqs)]
        assert np.array_equal(np.concatenate(cut), joined)
    assert blocks.num_seqs == -(-len(joined) // 35) and blocks.seq_len(0)["classes"] == 35
    check_epoch_order(blocks, "random", 1)


def test_break_mode_errors(tmp_path):
    (tmp_path / "t.txt").write_text("a b\n")
    with pytest.raises(ConfigError, match="dataset.train.sample_break_mode: unknown 'lines'; known: eos"):
        lm(tmp_path / "t.txt", sample_break_mode="lines")
    with pytest.raises(ConfigError, match="dataset.train.tokens_per_sample: sample_break_mode none needs"):
        lm(tmp_path / "t.txt", sample_break_mode="none")


def test_held_out_dev_lines_are_disjoint_from_train(tmp_path):
    (tmp_path / "t.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    opts = {"units": "char", "sample_break_mode": "none", "tokens_per_sample": 16}
    full = lm(tmp_path / "t.txt", **opts)
    train = lm(tmp_path / "t.txt", line_fraction=[0.0, 0.9], **opts)
    dev = lm(tmp_path / "t.txt", line_fraction=[0.9, 1.0], **opts)

    def text(ds):
        labels = ds.vocab.labels
        seqs = [ds.get_seq(i)["classes"] for i in range(ds.num_seqs)]
        return "".join(labels[i] for i in np.concatenate(seqs)).replace("</s>", "\n")

    assert text(train) == "".join(f"line {i}\n" for i in range(18))
    assert text(dev) == "line 18\nline 19\n"
    assert text(train) + text(dev) == text(full)
    assert train.vocab.labels == dev.vocab.labels  # both built from the whole file


def test_text_filter_for_a_character_lm_over_asr_labels(tmp_path):
    """PTB-style text turned into LibriSpeech's character set: upper case, <unk> and N dropped, other symbols
    removed; a line left empty is no sequence."""
    text = tmp_path / "t.txt"
    text.write_text("the company 's $ N million <unk> deal\n<unk> N\na-b & c.\n")
    ds = lm(
        text,
        units="char",
        uppercase=True,
        drop_words=["<unk>", "N"],
        keep_chars="ABCDEFGHIJKLMNOPQRSTUVWXYZ'",
        seq_end_symbol=None,
    )
    labels = ds.extern_data["classes"].vocab
    lines = ["".join(labels[i] for i in ds.get_seq(k)["classes"]) for k in range(ds.num_seqs)]
    assert lines == ["THE COMPANY 'S MILLION DEAL", "AB C"]
    assert set(labels) - {"<s>", "<unk>"} == set("THECOMPANY'SMILLIONDEALB ")


def test_text_filter_joins_split_clitics(tmp_path):
    """PTB splits "company's", "don't" and "investors'"; LibriSpeech writes them as one word."""
    text = tmp_path / "t.txt"
    text.write_text("the company 's chief do n't say they 're sure investors ' rock 'n' roll o'brien\n")
    ds = lm(text, units="word", join_clitics=True, uppercase=True, seq_end_symbol=None, unknown_symbol=None)
    labels = ds.extern_data["classes"].vocab
    words = [labels[i] for i in ds.get_seq(0)["classes"]]
    assert words == "THE COMPANY'S CHIEF DON'T SAY THEY'RE SURE INVESTORS' ROCK 'N' ROLL O'BRIEN".split()


@needs_data
def test_char_lm_preset_covers_the_speech_labels(tmp_path, monkeypatch):
    """+experiment=char_lm_ptb reads PTB as text over LibriSpeech's characters: every label of the tts
    corpus' transcripts is in the LM's vocabulary, no other symbol is, and no <unk> or N survives."""
    from tests.conftest import compose

    monkeypatch.setenv("SEQTRAIN_DATA", str(SHARED_DATA))
    cfg = compose("+experiment=char_lm_ptb")
    dev = build_dataset(cfg.dataset.dev, "dataset.dev")
    labels = dev.extern_data["data"].vocab
    transcripts = (SHARED_DATA / "tts-mini" / "train-clean-mini").glob("*/*/*.trans.txt")
    speech_chars = {
        c for f in transcripts for line in f.read_text().splitlines() for c in line.split(" ", 1)[1]
    }
    assert set(labels) - {"<s>", "</s>"} == speech_chars == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    text = "".join(labels[i] for i in dev.get_seq(0)["classes"][:300]).replace("</s>", " ")
    assert "UNK" not in text and " N " not in text and text.upper() == text

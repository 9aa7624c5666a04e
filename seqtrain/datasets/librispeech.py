"""The `librispeech` dataset: FLAC + transcripts in the LibriSpeech layout, features computed in the loader.

Layout: `<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` with one
`<speaker>-<chapter>.trans.txt` per chapter (lines `<utt-id> TRANSCRIPT`). Tags are `<subset>/<utt-id>`,
as in the HDF files RETURNN users dump from LibriSpeech, so `meta` can join the two.
Files derived from the training transcripts/audio (char vocabulary, BPE model, global normalization stats)
are made once, from `train_subsets`, and stored; dev/test configs point to the same ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from omegaconf import MISSING

from seqtrain.config import opt
from seqtrain.datasets import DATASETS
from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec
from seqtrain.datasets.features import (
    FbankSettings,
    NormStats,
    load_stats_by_key,
    log_mel_fbank,
    normalize_utterance,
    num_frames,
    save_stats_by_key,
)
from seqtrain.datasets.perturb import perturbed_num_samples, speed_factors, speed_perturb
from seqtrain.datasets.vocab import Vocabulary, write_atomic
from seqtrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class LibriSpeechOptions(DatasetOptions):
    root: str = opt(MISSING, "corpus folder holding the subsets (relative: to the cwd)")
    subsets: list[str] = opt(help="subsets read, in this order", factory=lambda: ["train-clean-100"])
    features: str = opt("fbank", "key data: fbank (log-mel [T, num_mel_bins]) or raw (waveform [N, 1])")
    add_raw: bool = opt(False, "also give the waveform as key raw [N, 1]")
    sample_rate: int = opt(16000, "expected sample rate; a file with another is an error", ge=1)
    num_mel_bins: int = opt(80, "fbank: mel bands", ge=1)
    window_ms: float = opt(25.0, "fbank: window length", gt=0)
    step_ms: float = opt(10.0, "fbank: frame shift", gt=0)
    n_fft: int | None = opt(None, "fbank: FFT size (default: next power of two >= the window)", ge=1)
    fmin: float = opt(0.0, "fbank: lowest frequency of the mel filters (Hz)", ge=0)
    fmax: float | None = opt(
        None, "fbank: highest frequency of the mel filters (Hz; default: sample_rate / 2)"
    )
    norm: str = opt(
        "none",
        "fbank normalization: none, utterance (per utterance mean/var), speaker (per speaker, over this "
        "dataset's utterances of the speaker; Kaldi's per-speaker CMVN) or global (over train_subsets)",
    )
    norm_stats_file: str | None = opt(
        None, "global: mean/std file (.npz); computed from train_subsets if missing (default: in cache_dir)"
    )
    targets: str = opt("chars", "key classes: chars (one label per character) or bpe (SentencePiece BPE)")
    vocab_file: str | None = opt(
        None, "chars: vocabulary; derived from train_subsets' transcripts if missing (default: in cache_dir)"
    )
    bpe_size: int = opt(1000, "bpe: vocabulary size when training the model", ge=1)
    bpe_model: str | None = opt(
        None,
        "bpe: SentencePiece .model; trained on train_subsets' transcripts if missing (default: in cache_dir)",
    )
    train_subsets: list[str] | None = opt(
        None,
        "subsets the vocabulary, BPE model and global stats come from (default: subsets; dev: train's)",
    )
    cache_dir: str | None = opt(
        None, "where derived files go (default: $XDG_CACHE_HOME or ~/.cache, /seqtrain/librispeech/<hash>)"
    )
    speed_perturbation: list[float] | None = opt(
        None,
        "augmentation for the training dataset: each epoch, each sequence plays at one of these speeds, "
        "drawn at random by the epoch's seed (e.g. [0.9, 1.0, 1.1]; resampled, so ~N/speed samples)",
    )


@dataclass
class Utterance:
    tag: str  # <subset>/<utterance id>
    path: str  # the FLAC file
    text: str


def _id_key(name: str) -> tuple:
    # Numeric order of speaker, chapter and utterance numbers (so 19 comes before 103, as in LibriSpeech).
    return tuple(int(p) if p.isdigit() else p for p in name.split("-"))


def speaker_of(utt: Utterance) -> str:
    """The speaker id: the first part of the utterance id (`<speaker>-<chapter>-<utt>`)."""
    return utt.tag.rpartition("/")[2].split("-")[0]


def read_transcripts(trans: Path) -> dict[str, str]:
    out = {}
    for num, line in enumerate(trans.read_text(encoding="utf8").splitlines(), 1):
        if not line.strip():
            continue
        utt, _, text = line.strip().partition(" ")
        if not text.strip():
            raise DataError(f"{trans}:{num}: empty transcript for {utt}")
        out[utt] = " ".join(text.split())
    return out


def index_chapter(chapter: Path, subset: str) -> list[Utterance]:
    """The utterances of one chapter folder; every transcript line needs its FLAC and vice versa."""
    flacs = {p.name[: -len(".flac")] for p in chapter.iterdir() if p.name.endswith(".flac")}
    texts: dict[str, str] = {}
    for trans in sorted(chapter.glob("*.trans.txt")):
        texts.update(read_transcripts(trans))
    for utt in sorted(set(texts) - flacs, key=_id_key):
        raise DataError(f"{chapter / (utt + '.flac')}: audio missing for its transcript line")
    for utt in sorted(flacs - set(texts), key=_id_key):
        raise DataError(f"{chapter / (utt + '.flac')}: no transcript line for it in {chapter}/*.trans.txt")
    return [
        Utterance(f"{subset}/{u}", str(chapter / f"{u}.flac"), texts[u]) for u in sorted(texts, key=_id_key)
    ]


def index_subset(root: Path, subset: str) -> list[Utterance]:
    base = root / subset
    if not base.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"subset folder {base} not found; {root} has: {', '.join(known) or 'nothing'}")
    out: list[Utterance] = []
    for speaker in sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: _id_key(p.name)):
        for chapter in sorted((p for p in speaker.iterdir() if p.is_dir()), key=lambda p: _id_key(p.name)):
            out.extend(index_chapter(chapter, subset))
    if not out:
        raise DataError(f"subset folder {base}: no utterances (expected <speaker>/<chapter>/*.flac)")
    return out


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform; any problem with the file is a DataError naming it."""
    try:
        wave, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's errors have several types; all mean a bad or missing file
        raise DataError(f"{path}: cannot read audio: {exc}") from None
    if sr != sample_rate:
        raise DataError(f"{path}: sample rate {sr}, expected {sample_rate} (option sample_rate)")
    if wave.shape[1] != 1:
        raise DataError(f"{path}: {wave.shape[1]} channels, expected mono")
    return wave[:, 0]


def audio_frames(path: str) -> int:
    try:
        return sf.info(path).frames
    except Exception as exc:
        raise DataError(f"{path}: cannot read audio header: {exc}") from None


@DATASETS.register("librispeech", LibriSpeechOptions)
class LibriSpeechDataset(Dataset):
    """Reads FLAC with soundfile and computes features per sequence (in the DataLoader workers)."""

    def __init__(self, opts: LibriSpeechOptions, name: str):
        super().__init__(opts, name)
        self._check_options(opts)
        self.root = Path(opts.root).resolve()
        if not self.root.is_dir():
            raise DataError(f"{name}.root: corpus folder {self.root} not found")
        self.utts = [u for subset in opts.subsets for u in index_subset(self.root, subset)]
        self.fbank = FbankSettings(
            opts.sample_rate,
            opts.num_mel_bins,
            opts.window_ms,
            opts.step_ms,
            opts.n_fft,
            opts.fmin,
            opts.fmax,
        )
        self.train_subsets = list(opts.train_subsets or opts.subsets)
        self.cache_dir = Path(opts.cache_dir) if opts.cache_dir else self._default_cache_dir()
        self._sp = None  # SentencePiece processor, loaded lazily (also in each worker)
        self.vocab = self._load_vocab(opts)
        self.classes = [self._encode(u) for u in self.utts]
        self.norm_stats = self._load_norm_stats(opts) if opts.norm == "global" else None
        self.speaker_stats = self._load_speaker_stats() if opts.norm == "speaker" else None
        self._num_samples: np.ndarray | None = None
        self._speeds: np.ndarray | None = None  # this epoch's speed factor per sequence

    def _check_options(self, opts: LibriSpeechOptions) -> None:
        choices = {
            "features": ("fbank", "raw"),
            "norm": ("none", "utterance", "speaker", "global"),
            "targets": ("chars", "bpe"),
        }
        for key, allowed in choices.items():
            if getattr(opts, key) not in allowed:
                raise ConfigError(
                    f"{self.name}.{key}: expected one of {', '.join(allowed)}, got {getattr(opts, key)!r}"
                )
        if not opts.subsets:
            raise ConfigError(f"{self.name}.subsets: give at least one subset")
        if opts.norm != "none" and opts.features != "fbank":
            raise ConfigError(f"{self.name}.norm: normalization applies to fbank features only")
        speeds = opts.speed_perturbation
        if speeds is not None and (not speeds or not all(0.5 <= f <= 2.0 for f in speeds)):
            raise ConfigError(
                f"{self.name}.speed_perturbation: give speed factors between 0.5 and 2 "
                f"(e.g. [0.9, 1.0, 1.1]) or null, got {list(speeds)}"
            )

    def _default_cache_dir(self) -> Path:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        key = hashlib.sha1(f"{self.root}|{','.join(self.train_subsets)}".encode()).hexdigest()[:12]
        return base / "seqtrain" / "librispeech" / key

    def _train_utts(self) -> list[Utterance]:
        if self.train_subsets == list(self.opts.subsets):
            return self.utts
        return [u for subset in self.train_subsets for u in index_subset(self.root, subset)]

    # --- targets ---
    def _load_vocab(self, opts: LibriSpeechOptions) -> Vocabulary:
        if opts.targets == "bpe":
            return Vocabulary(
                [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())],
                source=str(self.bpe_model_path),
            )
        path = Path(opts.vocab_file) if opts.vocab_file else self.cache_dir / "vocab.chars.json"
        if path.is_file():
            return Vocabulary.load(path)
        vocab = Vocabulary(sorted({c for u in self._train_utts() for c in u.text}), source=str(path))
        vocab.save(path)
        log.info("%s: character vocabulary of %d labels written to %s", self.name, len(vocab), path)
        return vocab

    @property
    def bpe_model_path(self) -> Path:
        opts = self.opts
        return Path(opts.bpe_model) if opts.bpe_model else self.cache_dir / f"bpe{opts.bpe_size}.model"

    @property
    def sp(self):
        if self._sp is None:
            import sentencepiece as spm

            path = self.bpe_model_path
            if not path.is_file():
                train_bpe([u.text for u in self._train_utts()], self.opts.bpe_size, path)
                log.info(
                    "%s: BPE model (%d pieces) trained, written to %s", self.name, self.opts.bpe_size, path
                )
            self._sp = spm.SentencePieceProcessor(model_file=str(path))
        return self._sp

    def _encode(self, utt: Utterance) -> np.ndarray:
        if self.opts.targets == "bpe":
            return np.asarray(self.sp.encode(utt.text), dtype=np.int32)
        return self.vocab.encode(utt.text, f"{self.name}: sequence {utt.tag}")

    # --- features ---
    def _load_norm_stats(self, opts: LibriSpeechOptions) -> NormStats:
        path = (
            Path(opts.norm_stats_file)
            if opts.norm_stats_file
            else (
                self.cache_dir / f"norm_stats.{hashlib.sha1(self.fbank.key().encode()).hexdigest()[:8]}.npz"
            )
        )
        if path.is_file():
            return NormStats.load(path, opts.num_mel_bins)
        utts = self._train_utts()
        log.info("%s: computing global normalization statistics over %d utterances", self.name, len(utts))
        stats = NormStats.compute(
            log_mel_fbank(read_audio(u.path, opts.sample_rate), self.fbank) for u in utts
        )
        stats.save(path)
        return stats

    def _load_speaker_stats(self) -> dict[str, NormStats]:
        # From this dataset's own subsets (dev speakers are not in training), cached per subsets and features.
        key = hashlib.sha1(f"{','.join(self.opts.subsets)}|{self.fbank.key()}".encode()).hexdigest()[:8]
        path = self.cache_dir / f"speaker_stats.{key}.npz"
        if path.is_file():
            return load_stats_by_key(path, self.opts.num_mel_bins)
        by_speaker: dict[str, list[Utterance]] = {}
        for u in self.utts:
            by_speaker.setdefault(speaker_of(u), []).append(u)
        log.info("%s: computing normalization statistics of %d speakers", self.name, len(by_speaker))
        stats = {
            spk: NormStats.compute(
                log_mel_fbank(read_audio(u.path, self.opts.sample_rate), self.fbank) for u in us
            )
            for spk, us in by_speaker.items()
        }
        save_stats_by_key(path, stats)
        return stats

    def features(self, wave: np.ndarray, idx: int) -> np.ndarray:
        feats = log_mel_fbank(wave, self.fbank)
        if self.norm_stats is not None:
            return self.norm_stats.apply(feats)
        if self.speaker_stats is not None:
            return self.speaker_stats[speaker_of(self.utts[idx])].apply(feats)
        if self.opts.norm == "utterance":
            return normalize_utterance(feats)
        return feats

    # --- augmentation ---
    def prepare_epoch(self, epoch: int) -> None:
        speeds = self.opts.speed_perturbation
        if speeds:
            self._speeds = speed_factors(list(speeds), self.num_seqs, self.random_seed_for_epoch(epoch))

    def speed(self, idx: int) -> float:
        """The speed factor of sequence `idx` in the current epoch (1 without speed_perturbation)."""
        return 1.0 if self._speeds is None else float(self._speeds[idx])

    # --- the Dataset contract ---
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sp"] = None  # the SentencePiece processor is reloaded in each worker
        return state

    @property
    def num_seqs(self) -> int:
        return len(self.utts)

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        dim = self.opts.num_mel_bins if self.opts.features == "fbank" else 1
        out = {
            "data": DataSpec(dim),
            "classes": DataSpec(len(self.vocab), sparse=True, dtype="int32", vocab=self.vocab.labels),
        }
        if self.opts.add_raw:
            out["raw"] = DataSpec(1)
        return out

    def seq_tag(self, idx: int) -> str:
        return self.utts[idx].tag

    def num_samples(self, idx: int) -> int:
        # From the FLAC headers, for all files at once, the first time lengths are needed (sorting, batching).
        if self._num_samples is None:
            self._num_samples = np.fromiter(
                (audio_frames(u.path) for u in self.utts), np.int64, len(self.utts)
            )
        return int(self._num_samples[idx])

    def seq_len(self, idx: int) -> dict[str, int]:
        n = perturbed_num_samples(self.num_samples(idx), self.speed(idx))
        out = {
            "data": num_frames(n, self.fbank) if self.opts.features == "fbank" else n,
            "classes": len(self.classes[idx]),
        }
        if self.opts.add_raw:
            out["raw"] = n
        return out

    def get_seq(self, idx: int) -> dict[str, np.ndarray]:
        wave = speed_perturb(read_audio(self.utts[idx].path, self.opts.sample_rate), self.speed(idx))
        out = {
            "data": self.features(wave, idx) if self.opts.features == "fbank" else wave[:, None],
            "classes": self.classes[idx],
        }
        if self.opts.add_raw:
            out["raw"] = wave[:, None]
        return out


def train_bpe(texts: list[str], vocab_size: int, path: Path) -> None:
    """Train a SentencePiece BPE model on `texts` and write it to `path` (atomically)."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    # No BOS/EOS: these are ASR targets. hard_vocab_limit=False: small corpora may not fill vocab_size.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    write_atomic(path, model.getvalue())

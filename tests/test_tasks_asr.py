"""task=search, forward, compute_priors on a BLSTM-CTC model overfit on a generated dataset whose features
encode the transcripts: decoding must give the transcripts back."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import seqtrain.layers.ctc  # noqa: F401  (registers until layers/__init__ imports it)
from seqtrain.app import Experiment
from seqtrain.config import ForwardConfig, PriorsConfig, SearchConfig
from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec
from seqtrain.errors import CheckpointError, ConfigError
from seqtrain.tasks import run_task
from tests.conftest import compose

VOCAB = ["a", "b", " "]
TRANSCRIPTS = ["ab ba", "a b", "bb a", "ba", "a", "b ab"]


class TinyAsr(Dataset):
    """Each label is 3 frames of its one-hot (plus noise), followed by one frame of the silence feature."""

    def __init__(self, copies: int = 4):
        super().__init__(DatasetOptions(), "dataset.tiny")
        self.texts = TRANSCRIPTS * copies
        self.rng = np.random.default_rng(0)
        self.feats = [self.encode(t) for t in self.texts]

    def encode(self, text: str) -> np.ndarray:
        frames = []
        for ch in text:
            frames += [np.eye(4)[VOCAB.index(ch)]] * 3 + [np.eye(4)[3]]
        return (np.array(frames) + 0.1 * self.rng.standard_normal((len(frames), 4))).astype(np.float32)

    @property
    def num_seqs(self) -> int:
        return len(self.texts)

    @property
    def extern_data(self) -> dict[str, DataSpec]:
        return {"data": DataSpec(4), "classes": DataSpec(len(VOCAB), sparse=True, dtype="int32", vocab=VOCAB)}

    def get_seq(self, idx: int) -> dict[str, np.ndarray]:
        labels = np.array([VOCAB.index(c) for c in self.texts[idx]], dtype=np.int32)
        return {"data": self.feats[idx], "classes": labels}

    def seq_tag(self, idx: int) -> str:
        return f"tiny/{idx}"


LAYERS = {
    "fw": {"class": "rec", "unit": "lstm", "n_out": 16, "direction": 1},
    "bw": {"class": "rec", "unit": "lstm", "n_out": 16, "direction": -1},
    "output": {"class": "softmax", "from": ["fw", "bw"], "n_out": len(VOCAB) + 1, "loss": "ctc"},
}


def experiment(run_dir, **task_options) -> Experiment:
    cfg = compose(
        "engine.num_epochs=30",
        "engine.save_interval=1000",
        "engine.device=cpu",
        "engine.tensorboard=false",
        "engine.progress_bar=false",
        "optimizer.lr=0.02",
        "batching.max_seqs=8",
    )
    cfg.network.layers = LAYERS
    cfg.task.search = task_options.get("search", SearchConfig())
    cfg.task.forward = task_options.get("forward", ForwardConfig())
    cfg.task.priors = task_options.get("priors", PriorsConfig())
    exp = Experiment(cfg, run_dir)
    exp.datasets = {"train": TinyAsr(), "dev": TinyAsr(copies=1), "eval": None}
    return exp


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("asr")
    torch.manual_seed(0)
    exp = experiment(run_dir)
    exp.engine.train()
    return run_dir


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_search_gives_the_transcripts_back(trained, decoder):
    exp = experiment(trained, search=SearchConfig(dataset="dev", decoder=decoder, beam_size=4))
    run_task("search", exp)
    out = trained / "search"
    hyps = dict(line.split("\t") for line in (out / "dev.epoch.030.hyp.txt").read_text().splitlines())
    assert hyps == {f"tiny/{i}": t for i, t in enumerate(TRANSCRIPTS)}
    report = json.loads((out / "dev.epoch.030.json").read_text())
    assert report["wer"]["rate"] == 0.0 and report["cer"]["ref_len"] == sum(map(len, TRANSCRIPTS))
    assert report["seqs"]["tiny/0"]["ref"] == "ab ba" and report["seqs"]["tiny/0"]["labels"] == [
        0,
        1,
        2,
        1,
        0,
    ]
    assert (out / "errs-wer-dev.epoch.030.txt").read_text().startswith("%WER = 0.00\n")


def test_search_decodes_an_averaged_checkpoint_by_file(trained):
    exp = experiment(trained)
    exp.cfg.task.average_epochs = [30]
    run_task("average_checkpoints", exp)
    exp = experiment(trained, search=SearchConfig(dataset="dev"))
    exp.cfg.task.load_file = "averaged.pt"
    run_task("search", exp)
    hyps = (trained / "search" / "dev.averaged.hyp.txt").read_text().splitlines()
    assert dict(line.split("\t") for line in hyps) == {f"tiny/{i}": t for i, t in enumerate(TRANSCRIPTS)}
    exp = experiment(trained, search=SearchConfig(dataset="dev"))
    exp.cfg.task.load_file = "missing.pt"
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        run_task("search", exp)


def write_lm_run(run_dir, units: str):
    """An LM run dir as task=search reads it: .hydra/config.yaml and models/epoch.001.pt (untrained)."""
    from omegaconf import OmegaConf

    from seqtrain import checkpoint
    from seqtrain.datasets import build_dataset
    from seqtrain.network import Network

    (run_dir / ".hydra").mkdir(parents=True)
    text = run_dir / "text.txt"
    text.write_text("\n".join(TRANSCRIPTS) + "\n")
    train = {"class": "lm", "corpus_file": [str(text)], "units": units, "vocab_build_from": [str(text)]}
    layers = {
        "emb": {"class": "linear", "n_out": 8},
        "lstm": {"class": "rec", "unit": "lstm", "n_out": 8, "from": "emb"},
        "output": {"class": "softmax", "from": "lstm", "loss": "ce"},
    }
    OmegaConf.save(
        {"dataset": {"train": train}, "network": {"layers": layers}}, run_dir / ".hydra" / "config.yaml"
    )
    torch.manual_seed(0)
    net = Network(layers, build_dataset(train, "lm.dataset.train").extern_data)
    checkpoint.save(
        checkpoint.checkpoint_path(run_dir / "models", 1), {"model": net.state_dict(), "epoch": 1}
    )
    return run_dir


@pytest.mark.parametrize("lm_unit, units", [("label", "char"), ("word", "word")])
def test_search_with_the_lm_of_a_run_dir(trained, tmp_path, lm_unit, units):
    lm_dir = write_lm_run(tmp_path / "lm", units)
    opts = SearchConfig(dataset="dev", beam_size=4, lm_run_dir=str(lm_dir), lm_unit=lm_unit, lm_weight=0.1)
    run_task("search", experiment(trained, search=opts))
    hyps = (trained / "search" / "dev.epoch.030.hyp.txt").read_text().splitlines()
    # an untrained LM at weight 0.1 does not outvote the overfit acoustic model, but any label or word it
    # could not map (-inf) would
    assert dict(line.split("\t") for line in hyps) == {f"tiny/{i}": t for i, t in enumerate(TRANSCRIPTS)}


def test_search_writes_the_n_best_with_their_scores(trained, tmp_path):
    lm_dir = write_lm_run(tmp_path / "lm", "char")
    opts = SearchConfig(dataset="dev", beam_size=4, nbest=3, lm_run_dir=str(lm_dir), lm_weight=0.5)
    run_task("search", experiment(trained, search=opts))
    seqs = json.loads((trained / "search" / "dev.epoch.030.json").read_text())["seqs"]
    for seq in seqs.values():
        nbest = seq["nbest"]
        assert len(nbest) == 3 and nbest[0]["hyp"] == seq["hyp"] and nbest[0]["score"] == seq["score"]
        assert len({tuple(h["labels"]) for h in nbest}) == 3
        assert [h["score"] for h in nbest] == sorted((h["score"] for h in nbest), reverse=True)
        for h in nbest:  # the fused score: AM + weight * LM (no length bonus)
            assert h["score"] == pytest.approx(h["am_score"] + 0.5 * h["lm_score"]) and h["lm_score"] < 0


def test_search_option_errors(trained):
    with pytest.raises(ConfigError, match="task.search.dataset: no dataset 'eval' configured"):
        run_task("search", experiment(trained, search=SearchConfig(dataset="eval")))
    with pytest.raises(ConfigError, match="task.search.output_layer: no layer 'out'"):
        run_task("search", experiment(trained, search=SearchConfig(output_layer="out")))
    with pytest.raises(ConfigError, match="task.search.lm_unit: unknown 'words'; known: label, word"):
        run_task("search", experiment(trained, search=SearchConfig(lm_unit="words")))
    with pytest.raises(ConfigError, match=r"task.search.nbest: 9 must be from 1 to beam_size \(8\)"):
        run_task("search", experiment(trained, search=SearchConfig(nbest=9)))
    with pytest.raises(ConfigError, match="task.search.nbest: an n-best list needs decoder=beam"):
        run_task("search", experiment(trained, search=SearchConfig(nbest=2, decoder="greedy")))
    with pytest.raises(ConfigError, match="task.search.lm_run_dir: .*config.yaml not found"):
        run_task("search", experiment(trained, search=SearchConfig(lm_run_dir="/nonexistent")))


def test_forward_writes_log_probs_to_hdf(trained):
    path = trained / "fwd.hdf"
    exp = experiment(trained, forward=ForwardConfig(output="log_softmax", output_file=str(path)))
    run_task("forward", exp)
    with h5py.File(path, "r") as f:
        tags = [t.decode() if isinstance(t, bytes) else t for t in f["seqTags"][()]]
        lens = f["seqLengths"][()][:, 0]
        inputs = f["inputs"][()]
    assert tags == [f"tiny/{i}" for i in range(len(TRANSCRIPTS))]
    assert lens.tolist() == [4 * len(t) for t in TRANSCRIPTS]
    np.testing.assert_allclose(np.exp(inputs).sum(1), 1.0, rtol=1e-5)
    # the first sequence alone through the network gives the same rows
    ds, net = exp.datasets["dev"], exp.network.eval()
    from seqtrain.data import pad
    from seqtrain.tensor import Dim, Tensor

    seq = ds.get_seq(0)
    raw, seq_lens = pad([seq["data"]], ds.extern_data["data"])
    x = Tensor(raw, (Dim("batch", size=1), Dim("time", seq_lens=seq_lens), Dim("f", size=4)))
    with torch.no_grad():
        expected = torch.log_softmax(net({"data": x})["output"].logits, -1)[0].numpy()
    np.testing.assert_allclose(inputs[: lens[0]], expected, rtol=1e-4, atol=1e-5)


def test_compute_priors_are_normalised_log_averages(trained):
    path = trained / "prior.txt"
    exp = experiment(trained, priors=PriorsConfig(dataset="dev", output_file=str(path)))
    run_task("compute_priors", exp)
    priors = np.loadtxt(path)
    assert priors.shape == (len(VOCAB) + 1,)
    assert np.exp(priors).sum() == pytest.approx(1.0, abs=1e-6)
    # the mean over all real frames of the posteriors task=forward writes
    fwd = trained / "fwd_priors.hdf"
    run_task("forward", experiment(trained, forward=ForwardConfig(dataset="dev", output_file=str(fwd))))
    with h5py.File(fwd, "r") as f:
        expected = np.log(f["inputs"][()].astype(np.float64).mean(0))
    np.testing.assert_allclose(priors, expected, rtol=1e-5)


def test_task_configs_compose():
    for name in ("search", "forward", "compute_priors"):
        assert compose(f"task={name}").task.name == name

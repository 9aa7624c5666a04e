"""Tasks for recognition models: `search` (CTC decoding and WER/CER), `forward` (layer outputs to a RETURNN
HDF file), `compute_priors` (log average posteriors for hybrid decoding).

Each loads `task.load_file` or checkpoint `task.load_epoch` (default: the last of the run) and reads its own
options group, `task.search`, `task.forward` or `task.priors` (dataclasses in seqtrain/config.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqtrain import checkpoint
from seqtrain.config import SearchConfig
from seqtrain.errors import CheckpointError, ConfigError
from seqtrain.network_lm import NetworkLM
from seqtrain.search import (
    Hypothesis,
    beam_search_batch,
    ctc_log_probs,
    greedy_decode,
    labels_to_text,
)
from seqtrain.tasks import Loaded, load_for_task, task
from seqtrain.wer import ErrorStats, chars, words
from seqtrain.word_lm import WordLM

log = logging.getLogger(__name__)


# --- shared ---


def load_model(exp) -> Loaded:
    """Load `task.load_file` or checkpoint `task.load_epoch` (default: the last) into the engine's network."""
    loaded = load_for_task(exp)
    exp.engine.network.eval()
    return loaded


def check_dataset_and_layer(exp, where: str, dataset: str, layer: str) -> None:
    if exp.datasets.get(dataset) is None:
        configured = [k for k, ds in exp.datasets.items() if ds is not None]
        raise ConfigError(f"{where}.dataset: no dataset {dataset!r} configured; configured: {configured}")
    if layer not in exp.network.layers:
        raise ConfigError(
            f"{where}.output_layer: no layer {layer!r} in the network; "
            f"layers: {', '.join(exp.network.layers)}"
        )


@torch.no_grad()
def run_batches(exp, dataset: str, epoch: int):
    """(batch, data, outputs) of every batch of `dataset`, in eval mode."""
    engine = exp.engine
    engine.network.eval()
    for batch, data in engine.batches(dataset, epoch, train=False):
        with engine.autocast():
            outputs = engine.network(data)
        yield batch, data, outputs


# --- task=search ---


@dataclass
class SeqResult:
    tag: str
    labels: list[int]
    score: float | None
    ref: list[int] | None
    nbest: list[Hypothesis] = field(default_factory=list)  # beam: the best task.search.nbest, best first


@task("search")
def search(exp) -> None:
    """Decode `task.search.dataset`; write hypotheses (text and JSON) and, with references, WER/CER reports to
    `<run_dir>/search/`."""
    opts = exp.cfg.task.search
    check_dataset_and_layer(exp, "task.search", opts.dataset, opts.output_layer)
    if opts.decoder not in ("greedy", "beam"):
        raise ConfigError(f"task.search.decoder: unknown {opts.decoder!r}; known: greedy, beam")
    if opts.lm_unit not in ("label", "word"):
        raise ConfigError(f"task.search.lm_unit: unknown {opts.lm_unit!r}; known: label, word")
    if not 1 <= opts.nbest <= opts.beam_size:
        raise ConfigError(f"task.search.nbest: {opts.nbest} must be from 1 to beam_size ({opts.beam_size})")
    if opts.nbest > 1 and opts.decoder != "beam":
        raise ConfigError("task.search.nbest: an n-best list needs decoder=beam (greedy gives one)")
    loaded = load_model(exp)
    layer = exp.network.layers[opts.output_layer]
    target = layer.opts.target
    vocab = exp.network.extern_data[target].vocab if target in exp.network.extern_data else None
    lm = load_lm(exp, opts, vocab) if opts.lm_run_dir else None
    results = decode_dataset(exp, opts, loaded.epoch, lm)
    prefix = Path(exp.run_dir) / "search" / f"{opts.dataset}.{loaded.name}"
    summary = write_search_outputs(prefix, results, vocab, {"epoch": loaded.epoch, "dataset": opts.dataset})
    log.info("search %s %s: %s (written to %s.*)", opts.dataset, loaded.name, summary, prefix)


def decode_dataset(exp, opts: SearchConfig, epoch: int, lm: NetworkLM | WordLM | None) -> list[SeqResult]:
    from seqtrain.layers.ctc import blank_index

    layer = exp.network.layers[opts.output_layer]
    results = []
    for batch, data, outputs in run_batches(exp, opts.dataset, epoch):
        out = outputs[opts.output_layer]
        blank = blank_index(out, layer.opts.loss_opts)
        log_probs, lens = ctc_log_probs(out), out.time_dim.seq_lens
        if opts.decoder == "greedy":
            beams = [[] for _ in range(batch.num_seqs)]
            hyps = [(labels, None) for labels in greedy_decode(log_probs, lens, blank)]
        else:
            beams = beam_search_batch(
                log_probs,
                lens,
                opts.beam_size,
                blank,
                lm=lm,
                lm_weight=opts.lm_weight,
                length_bonus=opts.length_bonus,
                token_beam=opts.token_beam,
                lm_end=lm.end_log_probs if lm is not None else None,
                length_units=lm.length_units if lm is not None else None,
            )
            hyps = [(list(b[0].labels), b[0].score) if b else ([], None) for b in beams]
        refs = references(data, layer.opts.target, batch.num_seqs)
        results += [
            SeqResult(tag, labels, score, ref, beam[: opts.nbest] if opts.nbest > 1 else [])
            for tag, (labels, score), ref, beam in zip(batch.tags, hyps, refs, beams)
        ]
    return results


def references(data: dict, target: str, num_seqs: int) -> list[list[int] | None]:
    if target not in data:
        return [None] * num_seqs
    ref = data[target]
    return [row[: int(n)].tolist() for row, n in zip(ref.raw.cpu(), ref.time_dim.seq_lens.cpu())]


def to_text(labels: list[int], vocab: list[str] | None) -> str:
    return labels_to_text(labels, vocab) if vocab else " ".join(map(str, labels))


def write_search_outputs(prefix: Path, results: list[SeqResult], vocab, meta: dict) -> str:
    """`<prefix>.hyp.txt` (tag TAB text), `<prefix>.json`; with references also `errs-wer-*` / `errs-cer-*`
    reports next to them. Returns a one-line summary."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    stats = {"wer": ErrorStats("word"), "cer": ErrorStats("char")}
    seqs = {}
    for r in results:
        hyp = to_text(r.labels, vocab)
        seqs[r.tag] = {"hyp": hyp, "labels": r.labels, "score": r.score}
        if r.nbest:
            seqs[r.tag]["nbest"] = [
                {
                    "hyp": to_text(list(h.labels), vocab),
                    "labels": list(h.labels),
                    "score": h.score,
                    "am_score": h.am_score,
                    "lm_score": h.lm_score,
                }
                for h in r.nbest
            ]
        if r.ref is not None:
            ref = to_text(r.ref, vocab)
            seqs[r.tag]["ref"] = ref
            for key, split in (("wer", words), ("cer", chars)):
                a = stats[key].add(r.tag, split(ref), split(hyp))
                seqs[r.tag][f"{key}_errors"] = {"errors": a.errors, "ref_len": a.ref_len}
    prefix.with_name(prefix.name + ".hyp.txt").write_text(
        "".join(f"{tag}\t{s['hyp']}\n" for tag, s in seqs.items()), encoding="utf8"
    )
    has_refs = any(r.ref is not None for r in results)
    scores = {key: {"rate": s.rate, **s.totals()} for key, s in stats.items()} if has_refs else {}
    report = {**meta, "num_seqs": len(results), **scores, "seqs": seqs}
    prefix.with_name(prefix.name + ".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf8")
    if not has_refs:
        return f"{len(results)} sequences, no references"
    for key, s in stats.items():
        s.write(prefix.with_name(f"errs-{key}-{prefix.name}.txt"))
    return f"{len(results)} sequences, WER {100 * stats['wer'].rate:.2f}%, CER {100 * stats['cer'].rate:.2f}%"


def load_lm(exp, opts: SearchConfig, vocab: list[str] | None) -> NetworkLM | WordLM:
    """The LM of a seqtrain run dir: its network and data from `<dir>/.hydra/config.yaml`, its checkpoint."""
    from omegaconf import OmegaConf

    from seqtrain.datasets import build_dataset
    from seqtrain.network import Network

    if not vocab:
        raise ConfigError("task.search.lm_run_dir: an LM needs the target vocabulary, but the data has none")
    run_dir = Path(opts.lm_run_dir)
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(
            f"task.search.lm_run_dir: {cfg_path} not found (give the run dir of an LM training)"
        )
    lm_cfg = OmegaConf.load(cfg_path)
    train = OmegaConf.to_container(lm_cfg.dataset.train, resolve=True)
    network = Network(
        OmegaConf.to_container(lm_cfg.network.layers, resolve=True),
        build_dataset(train, "lm.dataset.train").extern_data,
    )
    models = run_dir / lm_cfg.get("model_dir", "models")
    epochs = checkpoint.list_epochs(models)
    epoch = opts.lm_epoch if opts.lm_epoch is not None else (epochs[-1] if epochs else None)
    if epoch is None:
        raise CheckpointError(f"{models}: no LM checkpoint")
    network.load_state_dict(checkpoint.load(checkpoint.checkpoint_path(models, epoch), "cpu")["model"])
    log.info("search: %s LM from %s epoch %d, weight %g", opts.lm_unit, run_dir, epoch, opts.lm_weight)
    network = network.to(exp.engine.device)
    if opts.lm_unit == "label":
        return NetworkLM(network, vocab, opts.lm_output_layer)
    words = NetworkLM(network, network.extern_data["data"].vocab, opts.lm_output_layer)
    return WordLM(words, vocab, opts.lm_oov_penalty, look_ahead=opts.lm_look_ahead)


# --- task=forward ---


@task("forward")
def forward(exp) -> None:
    """Write `task.forward.output_layer`'s output for every sequence of `task.forward.dataset` to a RETURNN
    HDF file (key `data`, i.e. `inputs`, with the sequence tags)."""
    from seqtrain.datasets.base import DataSpec
    from seqtrain.datasets.hdf import HDFWriter

    opts = exp.cfg.task.forward
    check_dataset_and_layer(exp, "task.forward", opts.dataset, opts.output_layer)
    if opts.output not in ("output", "log_softmax", "logits"):
        raise ConfigError(f"task.forward.output: unknown {opts.output!r}; known: output, log_softmax, logits")
    loaded = load_model(exp)
    default = Path(exp.run_dir) / "forward" / f"{opts.dataset}.{opts.output_layer}.{loaded.name}.hdf"
    path = Path(opts.output_file) if opts.output_file else default
    dim = exp.network.specs[opts.output_layer].dim
    num = 0
    with HDFWriter(path, {"data": DataSpec(dim)}) as writer:
        for batch, _, outputs in run_batches(exp, opts.dataset, loaded.epoch):
            values, lens = forward_values(outputs[opts.output_layer], opts.output)
            for tag, seq, n in zip(batch.tags, values, lens):
                writer.insert(tag, {"data": seq[:n]})
                num += 1
    log.info(
        "forward %s %s: %d sequences of layer %s written to %s",
        opts.dataset,
        loaded.name,
        num,
        opts.output_layer,
        path,
    )


def forward_values(out, kind: str) -> tuple[np.ndarray, list[int]]:
    """[B, T, F] float32 numpy of the chosen kind, and the lengths (1 per sequence without a time axis)."""
    if kind == "output":
        raw = out.raw
    elif out.logits is None:
        raise ConfigError(f"task.forward.output: {kind} needs a layer with logits (softmax or linear)")
    else:
        raw = torch.log_softmax(out.logits.float(), -1) if kind == "log_softmax" else out.logits
    raw = raw.float().cpu()
    if out.time_dim is None:
        return raw[:, None].numpy(), [1] * raw.shape[0]
    return raw.numpy(), out.time_dim.seq_lens.cpu().tolist()


# --- task=compute_priors ---


@task("compute_priors")
def compute_priors(exp) -> None:
    """log(average posterior) of `task.priors.output_layer` over the real frames of `task.priors.dataset`, one
    value per line (RETURNN: numpy.savetxt of the log average posteriors)."""
    opts = exp.cfg.task.priors
    check_dataset_and_layer(exp, "task.priors", opts.dataset, opts.output_layer)
    loaded = load_model(exp)
    sums, frames = None, 0
    for _, _, outputs in run_batches(exp, opts.dataset, loaded.epoch):
        out = outputs[opts.output_layer]
        probs = torch.exp(ctc_log_probs(out)).double()[out.mask()]
        sums = probs.sum(0) if sums is None else sums + probs.sum(0)
        frames += probs.shape[0]
    if not frames:
        raise ConfigError(f"task.priors.dataset: {opts.dataset} gave no frames")
    average = (sums / frames).cpu().numpy()
    log.info("compute_priors: prior sum in std-space (should be close to 1.0): %.6f", average.sum())
    default = Path(exp.run_dir) / "priors" / f"{opts.output_layer}.{loaded.name}.txt"
    path = Path(opts.output_file) if opts.output_file else default
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        np.savetxt(f, np.log(average), delimiter=" ")
    log.info(
        "compute_priors %s %s: %d frames, log priors written to %s", opts.dataset, loaded.name, frames, path
    )

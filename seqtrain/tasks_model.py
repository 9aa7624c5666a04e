"""Tasks on a finished (or running) training's models: cleanup_old_models, average_checkpoints, analyze.

cleanup_old_models and average_checkpoints read only the run dir (checkpoints and the `learning_rates`
file); they build no dataset or network. analyze runs a checkpoint over a dataset and writes a report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import torch

from seqtrain import checkpoint
from seqtrain.cleanup import best_epochs, cleanup_old_models
from seqtrain.errors import CheckpointError, ConfigError
from seqtrain.layers.loss import aligned_mask, logits_of
from seqtrain.lr_control import LearningRateControl, build_lr_control
from seqtrain.scores import ScoreAccumulator
from seqtrain.tasks import load_for_task, task

log = logging.getLogger(__name__)


# --- shared helpers ---


def model_dir(exp) -> Path:
    return Path(exp.run_dir) / exp.cfg.model_dir


def load_scores(exp) -> LearningRateControl:
    """The run's epoch scores from `<run_dir>/learning_rates`, read by the configured LR control (so its
    learning_rate_control_error_measure picks the control score, as in training)."""
    path = Path(exp.run_dir) / "learning_rates"
    if not path.is_file():
        raise ConfigError(
            f"{path}: no learning_rates file, so no scores to rank epochs by (point hydra.run.dir at a "
            "training run)"
        )
    control = build_lr_control(exp.cfg.lr_control)
    control.load(path)
    return control


def scores_by_epoch(control: LearningRateControl) -> dict[int, dict[str, float]]:
    return {epoch: data.error for epoch, data in control.epoch_data.items()}


# --- task=cleanup_old_models ---


@task("cleanup_old_models")
def cleanup(exp) -> None:
    """Delete the checkpoints that the cleanup_old_models keep rules do not keep, and update best.pt.

    As RETURNN's task=cleanup_old_models, this runs whatever `cleanup_old_models.enabled` says: `enabled`
    only switches the cleanup after each training epoch; the keep rules (keep_last_n, keep_best_n, keep,
    best_by) apply here as configured.
    """
    control = load_scores(exp)
    cfg = dataclasses.replace(exp.cfg.cleanup_old_models, enabled=True)
    deleted = cleanup_old_models(model_dir(exp), scores_by_epoch(control), cfg, control.error_key())
    left = checkpoint.list_epochs(model_dir(exp))
    log.info("cleanup_old_models: deleted %d checkpoints; epochs left: %s", len(deleted), left)


# --- task=average_checkpoints ---


@task("average_checkpoints")
def average_checkpoints(exp) -> None:
    """Average the parameters of `task.average_epochs`, or of the `task.average_num_best` best epochs by
    the control score, into `task.average_output` (relative to the model dir)."""
    epochs = epochs_to_average(exp)
    paths = [checkpoint.checkpoint_path(model_dir(exp), e) for e in epochs]
    state = average_checkpoint_files(paths)
    state["averaged_epochs"] = epochs
    out = model_dir(exp) / exp.cfg.task.average_output  # an absolute average_output replaces the folder
    checkpoint.save(out, state)
    log.info("averaged epochs %s into %s", epochs, out)


def epochs_to_average(exp) -> list[int]:
    """The given epochs, or the N best by the control score among the epochs that have a checkpoint."""
    available = checkpoint.list_epochs(model_dir(exp))
    given = exp.cfg.task.average_epochs
    if given:
        missing = sorted(set(given) - set(available))
        if missing:
            raise CheckpointError(
                f"task.average_epochs: no checkpoint for epochs {missing} in {model_dir(exp)}; "
                f"there are: {available}"
            )
        return sorted(set(given))
    num = exp.cfg.task.average_num_best
    if num < 1:
        raise ConfigError(f"task.average_num_best: must be >= 1, got {num}")
    control = load_scores(exp)
    key = control.error_key()
    if key is None:
        raise CheckpointError(f"{exp.run_dir}/learning_rates: no epoch has scores; give task.average_epochs")
    scores = scores_by_epoch(control)
    # Epochs without a score (e.g. the run stopped before scoring) must not fill up the N best.
    scored = [e for e in available if not math.isnan(scores.get(e, {}).get(key, math.nan))]
    if not scored:
        raise CheckpointError(f"{model_dir(exp)}: no checkpoint has a {key!r} score in learning_rates")
    best = sorted(best_epochs(scored, scores, key, num))
    if len(best) < num:
        log.warning("average_checkpoints: only %d of %d wanted checkpoints have a score", len(best), num)
    log.info("average_checkpoints: the %d best epochs by %s: %s", len(best), key, best)
    return best


def average_checkpoint_files(paths: list[Path]) -> dict:
    """`epoch`, `global_step` and integer buffers (e.g. BatchNorm's num_batches_tracked) from the last
    file; floating-point tensors averaged (summed in float64, one file in memory at a time)."""
    first = paths[0]
    sums: dict[str, torch.Tensor] = {}
    for path in paths:
        state = checkpoint.load(path)
        if path == first:
            sums = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in state["model"].items()}
        check_same_parameters(first, sums, path, state["model"])
        for key, value in state["model"].items():
            if value.is_floating_point():
                sums[key] += value.to(torch.float64)
    model = {
        key: (sums[key] / len(paths)).to(value.dtype) if value.is_floating_point() else value
        for key, value in state["model"].items()
    }
    return {"epoch": state["epoch"], "global_step": state["global_step"], "model": model}


def check_same_parameters(first: Path, sums: dict, path: Path, model: dict) -> None:
    if set(sums) != set(model):
        diff = sorted(set(sums) ^ set(model))[:5]
        raise CheckpointError(
            f"{path}: parameters differ from {first.name} ({', '.join(diff)}); cannot average"
        )
    for key, value in model.items():
        if value.shape != sums[key].shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)}, {first.name} has "
                f"{tuple(sums[key].shape)}; cannot average"
            )


# --- task=analyze ---


@task("analyze")
def analyze(exp) -> None:
    """Run checkpoint `task.load_epoch` (default: the last) over `task.dataset` (default dev) and report loss,
    frame error, perplexity, sequence lengths and output-probability histograms, per batch in the log
    and for the whole dataset in `<run_dir>/analyze/<dataset>.epoch.NNN.{txt,json}` and TensorBoard."""
    name = exp.cfg.task.dataset or "dev"
    if exp.datasets.get(name) is None:
        configured = [k for k, ds in exp.datasets.items() if ds is not None]
        raise ConfigError(f"task.dataset: no dataset {name!r} configured; configured: {configured}")
    engine = exp.engine
    loaded = load_for_task(exp)
    epoch = loaded.epoch
    analysis = run_analysis(engine, name, exp.cfg.task.analyze_histogram_bins, exp.cfg.engine.log_interval)
    report = {"dataset": name, "epoch": epoch, **analysis.summary(name)}
    out = Path(exp.run_dir) / "analyze" / f"{name}.{loaded.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_name(out.name + ".txt").write_text(format_report(report))
    write_tensorboard(engine.tb.writer, analysis, name, epoch)
    log.info("analyze %s, %s:\n%s(written to %s.{txt,json})", name, loaded.name, format_report(report), out)


@torch.no_grad()
def run_analysis(engine, name: str, bins: int, log_interval: int) -> Analysis:
    """Forward every batch of dataset `name` as Engine.score does (eval mode, the same batches)."""
    engine.network.eval()
    analysis = Analysis(bins)
    for step, (batch, data) in enumerate(engine.batches(name, engine.epoch or 1, train=False), 1):
        with engine.autocast():
            outputs = engine.network(data)
            losses = engine.network.losses(outputs, data)
        text = analysis.add(batch, data, outputs, losses, engine.network)
        level = logging.INFO if step % max(log_interval, 1) == 0 else logging.DEBUG
        log.log(level, "analyze %s batch %d: %s", name, step, text)
    return analysis


class Histogram:
    """Counts of values in [0, 1] in `bins` equal bins (1.0 in the last), plus the moments TensorBoard
    wants for a raw histogram."""

    def __init__(self, bins: int):
        self.counts = torch.zeros(bins, dtype=torch.float64)
        self.num, self.sum, self.sum_squares = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, values: torch.Tensor) -> None:
        values = values.detach().double().cpu()
        if values.numel() == 0:
            return
        self.counts += torch.histc(values, bins=len(self.counts), min=0.0, max=1.0)
        self.num += values.numel()
        self.sum += float(values.sum())
        self.sum_squares += float((values * values).sum())
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))

    def edges(self) -> list[float]:
        return [i / len(self.counts) for i in range(len(self.counts) + 1)]

    def as_dict(self) -> dict:
        return {"edges": self.edges(), "counts": [int(c) for c in self.counts], "num": self.num}


class Analysis:
    """Accumulates losses, frame errors, sequence lengths and probability histograms over batches."""

    def __init__(self, bins: int):
        if bins < 1:
            raise ConfigError(f"task.analyze_histogram_bins: must be >= 1, got {bins}")
        self.bins = bins
        self.scores = ScoreAccumulator()
        self.ce_layers: set[str] = set()
        self.lengths: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.histograms: dict[str, dict[str, Histogram]] = {}
        self.num_batches = self.num_seqs = 0

    def add(self, batch, data, outputs, losses, network) -> str:
        """Add one batch; returns its per-frame scores as a log line."""
        self.num_batches += 1
        self.num_seqs += batch.num_seqs
        for key, tensor in data.items():
            if tensor.time_dim is not None:
                self.lengths[key].append(batch.seq_lens[key])
        step = self.scores.add(losses)
        for layer in losses:
            opts = network.layers[layer].opts
            if opts.loss == "ce":  # a distribution over the target classes: probabilities are meaningful
                self.ce_layers.add(layer)
                self.add_probabilities(layer, outputs[layer], data[opts.target])
                step[f"ppl_{layer}"] = math.exp(step[f"score_{layer}"])
        frames = {k: int(v[-1].sum()) for k, v in self.lengths.items()}
        return f"{batch.num_seqs} seqs, frames {frames}, " + " ".join(f"{k} {v:.4g}" for k, v in step.items())

    def add_probabilities(self, layer: str, out, target) -> None:
        """Histograms of the max probability and of the target class's probability over real frames, of
        the softmax of the logits the ce loss uses."""
        mask = aligned_mask(out, target, layer)
        probs = torch.softmax(logits_of(out)[mask].float(), dim=-1)
        labels = target.raw[mask]
        hists = self.histograms.setdefault(
            layer, {"max_prob": Histogram(self.bins), "target_prob": Histogram(self.bins)}
        )
        hists["max_prob"].add(probs.max(dim=-1).values)
        hists["target_prob"].add(probs.gather(-1, labels[:, None]).squeeze(-1))

    def dataset_scores(self, name: str) -> dict[str, float]:
        """`{name}_score_{layer}`, `{name}_error_{layer}` as Engine.score, and `{name}_ppl_{layer}` =
        exp(per-frame cross entropy) for ce layers (RETURNN's analyze reports ppl the same way)."""
        scores = self.scores.scores(name)
        for layer in sorted(self.ce_layers):
            scores[f"{name}_ppl_{layer}"] = math.exp(scores[f"{name}_score_{layer}"])
        return scores

    def length_stats(self) -> dict[str, dict[str, float]]:
        stats = {}
        for key, parts in self.lengths.items():
            lens = torch.cat(parts).double()
            stats[key] = {
                "num_seqs": len(lens),
                "min": int(lens.min()),
                "max": int(lens.max()),
                "mean": float(lens.mean()),
                "total": int(lens.sum()),
            }
        return stats

    def summary(self, name: str) -> dict:
        return {
            "num_batches": self.num_batches,
            "num_seqs": self.num_seqs,
            "scores": self.dataset_scores(name),
            "seq_lens": self.length_stats(),
            "histograms": {
                layer: {kind: h.as_dict() for kind, h in hists.items()}
                for layer, hists in self.histograms.items()
            },
        }


def format_report(report: dict) -> str:
    lines = [
        f"dataset {report['dataset']}, epoch {report['epoch']}: "
        f"{report['num_seqs']} sequences in {report['num_batches']} batches",
        "scores (per frame):",
        *(f"  {k}: {v:.6g}" for k, v in sorted(report["scores"].items())),
        "sequence lengths (frames):",
        *(
            f"  {key}: min {s['min']} max {s['max']} mean {s['mean']:.2f} total {s['total']}"
            for key, s in report["seq_lens"].items()
        ),
    ]
    for layer, hists in report["histograms"].items():
        for kind, hist in hists.items():
            lines.append(f"histogram {layer} {kind} ({hist['num']} frames):")
            edges, counts = hist["edges"], hist["counts"]
            for i, count in enumerate(counts):
                close = "]" if i == len(counts) - 1 else ")"  # torch.histc counts 1.0 in the last bin
                lines.append(f"  [{edges[i]:.2f}, {edges[i + 1]:.2f}{close}: {count}")
    return "\n".join(lines) + "\n"


def write_tensorboard(writer, analysis: Analysis, name: str, epoch: int) -> None:
    """Scalars `analyze/<score key>` and histograms `analyze/<dataset>/<layer>/<kind>` at step = epoch."""
    if writer is None:
        return
    for key, value in analysis.dataset_scores(name).items():
        writer.add_scalar(f"analyze/{key}", value, epoch)
    for layer, hists in analysis.histograms.items():
        for kind, hist in hists.items():
            if hist.num == 0:
                continue
            writer.add_histogram_raw(
                f"analyze/{name}/{layer}/{kind}",
                min=hist.min,
                max=hist.max,
                num=hist.num,
                sum=hist.sum,
                sum_squares=hist.sum_squares,
                bucket_limits=hist.edges()[1:],  # TensorBoard buckets are named by their right edge
                bucket_counts=hist.counts.tolist(),
                global_step=epoch,
            )
    writer.flush()

"""One small function per task, dispatched by name from app.py (`task=train`, `task=eval`, ...)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seqtrain import checkpoint
from seqtrain.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

TASKS: dict[str, Callable] = {}


def task(name: str):
    def decorator(fn: Callable) -> Callable:
        TASKS[name] = fn
        return fn

    return decorator


def run_task(name: str, exp) -> None:
    """`exp` is app.Experiment: it builds the datasets, network and engine on first use."""
    if name not in TASKS:
        raise ConfigError(f"task.name: unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    TASKS[name](exp)


@task("train")
def train(exp) -> None:
    exp.engine.train()


@task("nop")
def nop(exp) -> None:
    log.info("task nop: config composed and validated; nothing built")


@task("nop_init_net_train")
def nop_init_net_train(exp) -> None:
    """Build data, network and optimizer; print the network and its size."""
    engine = exp.engine
    log.info("network:\n%s", engine.network)
    log.info(
        "parameters: %d in %d tensors; optimizer %s",
        engine.network.num_params(),
        len(list(engine.network.parameters())),
        type(engine.optimizer).__name__,
    )
    for name, ds in exp.datasets.items():
        if ds is not None:
            log.info("dataset %s: %d sequences, keys %s", name, ds.num_seqs, ", ".join(ds.extern_data))


@task("initialize_model")
def initialize_model(exp) -> None:
    """Write the freshly initialised parameters as epoch 0."""
    engine = exp.engine
    engine.epoch = 0
    engine.save_checkpoint()


def epoch_to_load(exp) -> int:
    """`task.load_epoch`, else the last checkpoint of the run."""
    if exp.cfg.task.load_epoch is not None:
        return exp.cfg.task.load_epoch
    model_dir = exp.run_dir / exp.cfg.model_dir
    epochs = checkpoint.list_epochs(model_dir)
    if not epochs:
        raise CheckpointError(
            f"{model_dir}: no checkpoint (train first, or point hydra.run.dir at a training run)"
        )
    return epochs[-1]


@dataclass(frozen=True)
class Loaded:
    """What a model task loaded: the checkpoint's epoch, and the name its outputs carry."""

    epoch: int
    name: str  # epoch.003, or the stem of task.load_file (averaged, best)


def load_for_task(exp) -> Loaded:
    """Load `task.load_file`, else checkpoint `task.load_epoch` (default: the last), model only."""
    engine = exp.engine
    if exp.cfg.task.load_file:
        path = Path(exp.cfg.task.load_file)
        path = path if path.is_absolute() else engine.model_dir / path
        engine.load_checkpoint_file(path, model_only=True)
        return Loaded(engine.epoch, path.name.removesuffix(".pt"))
    epoch = epoch_to_load(exp)
    engine.load_checkpoint(epoch, model_only=True)
    return Loaded(epoch, f"epoch.{epoch:03d}")


@task("eval")
def evaluate(exp) -> None:
    """Score the dev/eval datasets with `task.load_file` or checkpoint `task.load_epoch` (default: last)."""
    engine = exp.engine
    loaded = load_for_task(exp)
    names = [n for n in exp.cfg.task.eval_datasets if exp.datasets.get(n) is not None]
    if not names:
        raise ConfigError(f"task.eval_datasets: none of {list(exp.cfg.task.eval_datasets)} is configured")
    scores = engine.score_datasets(names)
    out = engine.run_dir / "eval" / f"{loaded.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"epoch": loaded.epoch, "scores": scores}, indent=2) + "\n")
    scores_text = " ".join(f"{k} {v:.4g}" for k, v in scores.items())
    log.info("%s: %s (written to %s)", loaded.name, scores_text, out)


@task("dump")
def dump(exp) -> None:
    """Write a dataset's data (features and targets, as the loader gives them) to a RETURNN HDF file, so
    features are extracted once and later runs train from the HDF (`dataset: {class: hdf, files: [...]}`)."""
    from seqtrain.data import BatchLoader
    from seqtrain.datasets.hdf import HDFWriter

    name = exp.cfg.task.dataset or "train"
    ds = exp.datasets.get(name)
    if ds is None:
        raise ConfigError(f"task.dataset: no dataset {name!r} configured (dataset.{name})")
    out = Path(exp.cfg.task.output_file or exp.run_dir / "dump" / f"{name}.hdf")
    count = 0
    with HDFWriter(out, ds.extern_data) as writer:
        for batch in BatchLoader(ds, exp.cfg.batching, train=False).epoch(1):
            for i, tag in enumerate(batch.tags):
                seq = {}
                for key, raw in batch.data.items():
                    array = raw[i, : batch.seq_lens[key][i]] if ds.extern_data[key].time else raw[i]
                    seq[key] = array.numpy().astype(ds.extern_data[key].dtype, copy=False)
                writer.insert(tag, seq)
                count += 1
    log.info("dumped %d sequences of dataset.%s to %s", count, name, out)


import seqtrain.tasks_asr  # noqa: E402, F401  (registers search, forward, compute_priors)
import seqtrain.tasks_model  # noqa: E402, F401  (registers cleanup_old_models, average_checkpoints, analyze)

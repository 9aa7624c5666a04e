"""Deleting old checkpoints as RETURNN's `cleanup_old_models` does (keep the last, the best and a sparse fixed
pattern of epochs), and the `models/best.pt` link to the best checkpoint by the control score."""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Collection, Mapping
from itertools import count
from pathlib import Path

from seqtrain.checkpoint import checkpoint_path, list_epochs
from seqtrain.config import CleanupConfig
from seqtrain.errors import ConfigError

log = logging.getLogger(__name__)

BEST_NAME = "best.pt"
Scores = Mapping[int, Mapping[str, float]]


def default_keep_pattern(last_epoch: int) -> set[int]:
    """RETURNN Engine.cleanup_old_models: every `keep_every`-th epoch and `keep_doubles_of` * 2^i, both
    sparser for longer trainings (last epoch 10: {4, 5, 8, 10}; 100: {10, 20, 40, 80})."""
    if last_epoch <= 10:
        keep_every, keep_doubles_of = 4, 5
    elif last_epoch <= 50:
        keep_every, keep_doubles_of = 20, 5
    elif last_epoch <= 100:
        keep_every, keep_doubles_of = 40, 10
    else:
        keep_every, keep_doubles_of = 80 * _next_power_of_two(1 + last_epoch // 240), 20
    every = set(range(keep_every, last_epoch + 1, keep_every))
    doubles = set()
    for i in count():
        if keep_doubles_of * 2**i > last_epoch:
            break
        doubles.add(keep_doubles_of * 2**i)
    return every | doubles


def best_epochs(epochs: list[int], scores: Scores, key: str, n: int) -> list[int]:
    """The n epochs with the lowest `key` (a loss or error rate); missing or NaN counts as worst."""
    values = [_value(scores, e, key) for e in epochs]
    finite = [v for v in values if v is not None]
    if not finite:
        return []
    worst = max(finite)
    return [e for _, e in sorted((worst if v is None else v, e) for v, e in zip(values, epochs))[:n]]


def epochs_to_keep(epochs: list[int], scores: Scores, cfg: CleanupConfig, error_key: str | None) -> set[int]:
    """RETURNN's keep set: the fixed pattern, the last keep_last_n, the best keep_best_n per score key, and
    (our addition) the best epoch by the control score, which models/best.pt points at."""
    keep = set(default_keep_pattern(epochs[-1]) if cfg.keep is None else cfg.keep)
    keep.update(epochs[-cfg.keep_last_n :])
    for key in _score_keys(epochs, scores, cfg.best_by):
        keep.update(best_epochs(epochs, scores, key, cfg.keep_best_n))
    if error_key:
        keep.update(best_epochs(epochs, scores, error_key, 1))
    return keep & set(epochs)


def cleanup_old_models(
    model_dir: str | os.PathLike, scores_by_epoch: Scores, cfg: CleanupConfig, error_key: str | None
) -> list[str]:
    """Update models/best.pt (if cfg.best_link) and delete the checkpoints not kept (if cfg.enabled).
    Returns the deleted paths. Call it on the writing rank after each checkpoint is saved."""
    _check(cfg)
    epochs = list_epochs(model_dir)
    if cfg.best_link and error_key and epochs:
        best = best_epochs(epochs, scores_by_epoch, error_key, 1)
        if best:
            update_best_link(model_dir, best[0])
    if not cfg.enabled or not epochs:
        return []
    if max(cfg.keep_last_n, cfg.keep_best_n) >= len(epochs):
        return []  # RETURNN: not cleaning up while fewer epochs exist than would be kept
    keep = epochs_to_keep(epochs, scores_by_epoch, cfg, error_key)
    remove = [e for e in epochs if e not in keep]
    if remove:
        log.info("checkpoints: keeping epochs %s, deleting %s", sorted(keep), remove)
    deleted = []
    for epoch in remove:
        path = checkpoint_path(model_dir, epoch)
        path.unlink(missing_ok=True)
        deleted.append(str(path))
    return deleted


def update_best_link(model_dir: str | os.PathLike, epoch: int) -> Path:
    """Point models/best.pt at epoch.NNN.pt: a relative symlink, or a copy where symlinks are not possible.
    Replaced atomically, so a reader never sees it missing."""
    link = Path(model_dir) / BEST_NAME
    target = checkpoint_path(model_dir, epoch)
    if link.is_symlink() and os.readlink(link) == target.name:
        return link
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(target.name)
    except OSError:  # e.g. Windows without the privilege, some network file systems
        shutil.copyfile(target, tmp)
    os.replace(tmp, link)
    return link


def _score_keys(epochs: list[int], scores: Scores, prefixes: Collection[str]) -> list[str]:
    """RETURNN: every score key of any epoch, but skipping keys no kept-checkpoint epoch has or that never
    change; we also keep only keys starting with one of `prefixes` (default dev_)."""
    keys = sorted({k for s in scores.values() for k in s if any(k.startswith(p) for p in prefixes)})
    result = []
    for key in keys:
        values = [v for e in epochs if (v := _value(scores, e, key)) is not None]
        if values and min(values) != max(values):
            result.append(key)
    return result


def _value(scores: Scores, epoch: int, key: str) -> float | None:
    value = scores.get(epoch, {}).get(key)
    return None if value is None or math.isnan(value) else float(value)


def _next_power_of_two(n: int) -> int:
    return 2 ** int(n - 1).bit_length()


def _check(cfg: CleanupConfig) -> None:
    if cfg.keep_last_n < 1:
        raise ConfigError(
            "cleanup_old_models.keep_last_n: must be >= 1 (the last checkpoint is needed to resume)"
        )
    if cfg.keep_best_n < 0:
        raise ConfigError("cleanup_old_models.keep_best_n: must be >= 0")

"""Learning-rate control: RETURNN's per-epoch schedules (constant, Newbob variants, plateau; the score file
is in lr_file.py), and per-step factors (warmup, Noam, inverse sqrt, cosine) that multiply the epoch LR.

Everything an epoch's LR depends on is the epoch data (LR and scores of the earlier epochs), so the file or
the checkpoint state alone restores a run exactly, as in RETURNN (`returnn/learning_rate_control.py`).
"""

from __future__ import annotations

import ast
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from seqtrain.config import LRControlConfig
from seqtrain.errors import ConfigError
from seqtrain.lr_file import EpochData, format_learning_rates, parse_learning_rates

log = logging.getLogger(__name__)

# --- per-step factors ---


class StepSchedule:
    """factor(step) = warmup(step) * decay(step); steps count from 1, so the first update is not at LR 0."""

    def __init__(self, cfg: LRControlConfig):
        if cfg.warmup_steps < 0:
            raise ConfigError("lr_control.warmup_steps: must be >= 0")
        if cfg.warmup_mode not in ("linear", "exponential"):
            raise ConfigError(
                f"lr_control.warmup_mode: unknown {cfg.warmup_mode!r}; known: linear, exponential"
            )
        if cfg.step_decay not in ("none", "inverse_sqrt", "noam", "cosine"):
            raise ConfigError(
                f"lr_control.step_decay: unknown {cfg.step_decay!r}; known: none, inverse_sqrt, noam, cosine"
            )
        if cfg.step_decay == "cosine" and cfg.step_decay_steps <= 0:
            raise ConfigError("lr_control.step_decay_steps: step_decay=cosine needs the number of steps > 0")
        if cfg.warmup_mode == "exponential" and cfg.warmup_steps and cfg.warmup_start_factor <= 0:
            raise ConfigError(
                "lr_control.warmup_start_factor: exponential warmup needs a value > 0, e.g. 0.01"
            )
        if cfg.step_decay == "noam" and cfg.warmup_steps <= 0:
            raise ConfigError("lr_control.warmup_steps: step_decay=noam needs warmup_steps > 0 (e.g. 4000)")
        self.steps = cfg.warmup_steps
        # Noam (Vaswani et al. 2017) is a linear warmup from 0, then the inverse square root; peak 1.
        self.mode = "linear" if cfg.step_decay == "noam" else cfg.warmup_mode
        self.start = 0.0 if cfg.step_decay == "noam" else cfg.warmup_start_factor
        self.decay = "inverse_sqrt" if cfg.step_decay == "noam" else cfg.step_decay
        self.decay_steps = cfg.step_decay_steps

    def factor(self, global_step: int) -> float:
        step = global_step + 1
        return self._warmup(step) * self._decay(step)

    def _warmup(self, step: int) -> float:
        if step >= self.steps:
            return 1.0
        frac = step / self.steps
        if self.mode == "linear":
            return self.start + (1.0 - self.start) * frac
        return self.start ** (1.0 - frac)

    def _decay(self, step: int) -> float:
        if self.decay == "none":
            return 1.0
        if self.decay == "cosine":  # half a cosine from 1 to 0 over decay_steps after the warmup (SGDR)
            progress = min(max(step - self.steps, 0) / self.decay_steps, 1.0)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        peak = max(self.steps, 1)  # fairseq inverse_sqrt: lr * sqrt(warmup / step) after the warmup
        return math.sqrt(peak / max(step, peak))


# --- per-epoch control ---


class LearningRateControl:
    """RETURNN's LearningRateControl: the LR of an epoch is computed from the earlier epochs' data once, then
    recorded; `learning_rates` (e.g. a warmup) fixes the first epochs before the control takes over."""

    name = "constant"
    needs_scores = False

    def __init__(self, cfg: LRControlConfig):
        self.cfg = cfg
        self.default_learning_rate = _as_float(cfg.learning_rate, "lr_control.learning_rate")
        self.min_learning_rate = float(cfg.min_learning_rate)
        self.preset = _preset_learning_rates(cfg.learning_rates)
        self.error_measure = _plain(cfg.learning_rate_control_error_measure)
        self.schedule = StepSchedule(cfg)
        self.epoch_data: dict[int, EpochData] = {}
        self._apply_preset()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(type={self.name}, learning_rate={self.default_learning_rate}, "
            f"error_key={self.error_key()})"
        )

    # --- the Engine's interface ---
    def learning_rate(self, epoch: int) -> float:
        """The LR of `epoch`: the recorded one, else computed from the earlier epochs and recorded."""
        if epoch < 1:
            raise ValueError(f"epochs count from 1, got {epoch}")
        if epoch not in self.epoch_data:
            self.epoch_data[epoch] = EpochData(self._new_learning_rate(epoch))
        return self.epoch_data[epoch].learning_rate

    def set_fixed_learning_rate(self, epoch: int, learning_rate: float) -> None:
        """Record `learning_rate` for `epoch` unless one is recorded (pretraining's fixed LR)."""
        self.epoch_data.setdefault(epoch, EpochData(float(learning_rate)))

    def set_epoch_scores(self, epoch: int, scores: Mapping[str, Any]) -> None:
        """Record an epoch's scores; a nested {name: {sub: value}} becomes `name_sub` as in RETURNN."""
        self.learning_rate(epoch)  # RETURNN: "Learning rate not set for epoch. Assuming default."
        flat = {}
        for key, value in scores.items():
            if isinstance(value, Mapping):
                subs = {k.partition(":")[2] or k: v for k, v in value.items()}
                flat.update(
                    {key: next(iter(subs.values()))}
                    if len(subs) == 1
                    else {f"{key}_{k}": v for k, v in subs.items()}
                )
            else:
                flat[key] = value
        self.epoch_data[epoch].error.update({k: float(v) for k, v in flat.items()})
        if epoch == 1:
            log.info("learning-rate control: error key %r of %s", self.error_key(epoch), sorted(flat))

    def set_epoch_meta(self, epoch: int, meta: Mapping[str, Any]) -> None:
        """Extra info written as `:meta:KEY` (e.g. global_train_step); plain Python values only."""
        self.learning_rate(epoch)
        self.epoch_data[epoch].meta.update(meta)

    def step_factor(self, global_step: int) -> float:
        return self.schedule.factor(global_step)

    def error_key(self, epoch: int | None = None) -> str | None:
        """RETURNN get_error_key: the configured measure if present, else the dev score, else train score."""
        if epoch is None:
            scored = [e for e, d in self.epoch_data.items() if d.error]
            epoch = max(scored) if scored else 0
        data = self.epoch_data.get(epoch)
        if data is None:
            return self.error_measure[0] if isinstance(self.error_measure, list) else self.error_measure
        return _pick_error_key(data.error, self.error_measure)

    # --- checkpoint state and the file ---
    def state_dict(self) -> dict:
        return {
            "epoch_data": {
                e: {"learning_rate": d.learning_rate, "error": dict(d.error), "meta": dict(d.meta)}
                for e, d in sorted(self.epoch_data.items())
            }
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch_data = {
            int(e): EpochData(float(d["learning_rate"]), dict(d["error"]), dict(d["meta"]))
            for e, d in state["epoch_data"].items()
        }
        self._apply_preset()

    def save(self, path: str | os.PathLike) -> None:
        """Write the `learning_rates` file atomically (RETURNN writes `.new_tmp` and renames, as we do)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = path + ".new_tmp"
        with open(tmp, "w") as f:
            f.write(format_learning_rates(self.epoch_data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, path: str | os.PathLike) -> None:
        """Replace the epoch data with a RETURNN-format file; `learning_rates` fills epochs it lacks."""
        with open(path) as f:
            self.epoch_data = parse_learning_rates(f.read(), os.fspath(path))
        self._apply_preset()

    # --- RETURNN's building blocks ---
    def _apply_preset(self) -> None:
        for epoch, lr in self.preset.items():
            self.set_fixed_learning_rate(epoch, lr)

    def _new_learning_rate(self, epoch: int) -> float:
        # RETURNN calc_new_learning_rate_for_epoch: a new LR lasts at least min_num_epochs_per_new_lr epochs.
        min_epochs = self.cfg.learning_rate_control_min_num_epochs_per_new_lr
        if min_epochs > 1:
            last_lrs = [self.epoch_data[e].learning_rate for e in self._last_epochs(epoch, min_epochs)]
            if len(set(last_lrs)) >= 2 or 0 < len(last_lrs) < min_epochs:
                return last_lrs[-1]
        return self._calc(epoch)

    def _calc(self, epoch: int) -> float:
        # RETURNN ConstantLearningRate: the last recorded LR (so the end of a `learning_rates` list stays).
        return self._most_recent_learning_rate(epoch)

    def _last_epochs(self, epoch: int, num: int) -> list[int]:
        return sorted(e for e in self.epoch_data if e < epoch)[-num:]

    def _last_two(self, epoch: int) -> tuple[float, int | None, int | None]:
        """The LR to keep (the last epoch's, else the initial one) and the last two epochs before `epoch`
        (older, newer; None where there is none)."""
        last = self._last_epoch(epoch)
        if last is None:
            return self.default_learning_rate, None, None
        return self.epoch_data[last].learning_rate, self._last_epoch(last), last

    def _last_epoch(self, epoch: int) -> int | None:
        last = self._last_epochs(epoch, 1)
        return last[0] if last else None

    def _most_recent_learning_rate(self, epoch: int, include_current: bool = False) -> float:
        epochs = [e for e in self.epoch_data if e < epoch or (include_current and e == epoch)]
        return self.epoch_data[max(epochs)].learning_rate if epochs else self.default_learning_rate

    def _epoch_score(self, epoch: int) -> tuple[str | None, float | None]:
        data = self.epoch_data.get(epoch)
        if data is None or not data.error:
            return None, None
        key = _pick_error_key(data.error, self.error_measure)
        return key, data.error[key]

    def _relative_error(self, old_epoch: int, new_epoch: int) -> float | None:
        """RETURNN calc_relative_error: (new - old) / |new| (or / |old|), None if a score is missing."""
        old_key, old = self._epoch_score(old_epoch)
        new_key, new = self._epoch_score(new_epoch)
        if old is None or new is None or old_key != new_key:
            return None
        denom = abs(old) if self.cfg.newbob_relative_error_div_by_old else abs(new)
        # RETURNN divides by zero here (e.g. a dev error of 0.0); we call no change 0 and a change +-inf.
        rel = (new - old) / denom if denom else (0.0 if new == old else math.copysign(math.inf, new - old))
        if self.cfg.learning_rate_control_relative_error_relative_lr:
            lr = self._most_recent_learning_rate(new_epoch, include_current=True)
            if lr > 0:  # at a smaller LR a smaller gain is expected, so scale the change up
                rel /= lr / self.default_learning_rate
        return rel

    def _decay_or_grow(self, lr: float, decay: bool, grow: bool | None = None) -> float:
        """RETURNN calc_learning_rate_decay_or_grow: only a decay is clipped at min_learning_rate."""
        grow = not decay if grow is None else grow
        if decay:
            lr = max(lr * self.cfg.newbob_learning_rate_decay, self.min_learning_rate)
        if grow:
            lr = lr * self.cfg.newbob_learning_rate_growth
        return lr


class NewbobRelative(LearningRateControl):
    """RETURNN NewbobRelative: decay when the relative change of the last two epochs' scores is above the
    threshold (default -0.01: less than 1% better), else grow (growth 1.0 keeps the LR)."""

    name = "newbob"
    needs_scores = True

    def _calc(self, epoch: int) -> float:
        lr, old, new = self._last_two(epoch)
        rel = None if old is None else self._relative_error(old, new)
        if rel is None:
            return lr
        return self._decay_or_grow(lr, decay=rel > self.cfg.newbob_relative_error_threshold)


class NewbobAbs(LearningRateControl):
    """RETURNN NewbobAbs: like newbob, on the absolute difference new - old of the scores."""

    name = "newbob_abs"
    needs_scores = True

    def _calc(self, epoch: int) -> float:
        lr, old_epoch, new_epoch = self._last_two(epoch)
        if old_epoch is None:
            return lr
        (old_key, old), (new_key, new) = self._epoch_score(old_epoch), self._epoch_score(new_epoch)
        if old is None or new is None or old_key != new_key:
            return lr
        return self._decay_or_grow(lr, decay=new - old > self.cfg.newbob_error_threshold)


class NewbobMultiEpoch(LearningRateControl):
    """RETURNN NewbobMultiEpoch: mean relative change over the last N epochs, checked every
    `update_interval` epochs (epochs 1, 1 + interval, ...); made for partition_epoch."""

    name = "newbob_multi_epoch"
    needs_scores = True

    def __init__(self, cfg: LRControlConfig):
        super().__init__(cfg)
        self.num_epochs = cfg.newbob_multi_num_epochs
        self.update_interval = cfg.newbob_multi_update_interval or self.num_epochs
        self.threshold = cfg.newbob_relative_error_threshold
        grow = cfg.newbob_relative_error_grow_threshold
        self.grow_threshold = self.threshold if grow is None else grow
        if self.num_epochs < 1 or self.update_interval < 1:
            raise ConfigError("lr_control.newbob_multi_num_epochs/newbob_multi_update_interval: must be >= 1")
        if self.grow_threshold > self.threshold:
            raise ConfigError(
                "lr_control.newbob_relative_error_grow_threshold: must be <= "
                "newbob_relative_error_threshold (else one change would both decay and grow)"
            )

    def _calc(self, epoch: int) -> float:
        lr = self._most_recent_learning_rate(epoch)
        if self.update_interval > 1 and epoch % self.update_interval != 1:
            return lr
        mean = self._mean_relative_error(epoch)
        if mean is None:
            return lr
        return self._decay_or_grow(lr, decay=mean > self.threshold, grow=mean < self.grow_threshold)

    def _mean_relative_error(self, epoch: int) -> float | None:
        epochs = self._last_epochs(epoch, self.num_epochs + 1)  # N changes need N + 1 epochs
        if len(epochs) <= 1:
            return None
        rels = [self._relative_error(a, b) for a, b in zip(epochs[:-1], epochs[1:])]
        return None if any(r is None for r in rels) else sum(rels) / len(rels)


class Plateau(LearningRateControl):
    """torch's ReduceLROnPlateau on the control score (mode min), replayed over the recorded epochs, so
    that the epoch data alone determines the LR, as for the Newbob variants."""

    name = "plateau"
    needs_scores = True

    def __init__(self, cfg: LRControlConfig):
        super().__init__(cfg)
        if cfg.plateau_threshold_mode not in ("rel", "abs"):
            raise ConfigError(
                f"lr_control.plateau_threshold_mode: unknown {cfg.plateau_threshold_mode!r}; known: rel, abs"
            )
        if not 0.0 < cfg.plateau_factor < 1.0:
            raise ConfigError("lr_control.plateau_factor: must be in (0, 1)")

    def _calc(self, epoch: int) -> float:
        optimizer = torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=self.default_learning_rate)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=self.cfg.plateau_factor,
            patience=self.cfg.plateau_patience,
            threshold=self.cfg.plateau_threshold,
            threshold_mode=self.cfg.plateau_threshold_mode,
            cooldown=self.cfg.plateau_cooldown,
            min_lr=self.min_learning_rate,
        )
        stepped = False
        for past in sorted(e for e in self.epoch_data if e < epoch):
            _, score = self._epoch_score(past)
            if score is None:
                continue
            optimizer.param_groups[0]["lr"] = self.epoch_data[
                past
            ].learning_rate  # what that epoch trained with
            scheduler.step(score)
            stepped = True
        return optimizer.param_groups[0]["lr"] if stepped else self._most_recent_learning_rate(epoch)


CONTROLS: dict[str, type[LearningRateControl]] = {
    cls.name: cls for cls in (LearningRateControl, NewbobRelative, NewbobAbs, NewbobMultiEpoch, Plateau)
}


def build_lr_control(cfg: LRControlConfig) -> LearningRateControl:
    if cfg.type not in CONTROLS:
        raise ConfigError(f"lr_control.type: unknown {cfg.type!r}; known: {', '.join(CONTROLS)}")
    return CONTROLS[cfg.type](cfg)


# --- helpers ---


def _pick_error_key(error: Mapping[str, float], measure: str | list[str] | None) -> str:
    """RETURNN LearningRateControl.get_error_key for one epoch's scores (which must not be empty)."""
    if len(error) == 1 and "old_format_score" in error:
        return "old_format_score"
    measures = measure if isinstance(measure, list) else [measure] if measure else []
    keys = [k for m in measures for k in (m, m + "_output")] + ["dev_score", "dev_score_output"]
    for key in keys:
        if key in error:
            return key
    ordered = sorted(error)
    for accept in (
        lambda k: k == "dev_score_output/output" or k.startswith("dev_score_output/output_"),
        lambda k: k.startswith("dev_score_output/"),
        lambda k: k.startswith("dev_"),
    ):
        found = [k for k in ordered if accept(k)]
        if found:
            return found[0]
    for key in ("train_score", "train_score_output"):
        if key in error:
            return key
    return ordered[0]


def _preset_learning_rates(value: Any) -> dict[int, float]:
    """`learning_rates`: a list for epochs 1, 2, ..., a {epoch: lr} dict, or a string of either."""
    value = _plain(value)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ConfigError(f"lr_control.learning_rates: cannot parse {value!r}") from None
    if not value:
        return {}
    if isinstance(value, (list, tuple)):
        value = {i + 1: v for i, v in enumerate(value)}
    if not isinstance(value, dict):
        raise ConfigError(f"lr_control.learning_rates: expected a list or {{epoch: lr}}, got {value!r}")
    try:
        return {int(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ConfigError(
            f"lr_control.learning_rates: epochs must be integers and LRs numbers: {value!r}"
        ) from None


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _as_float(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r} (is optimizer.lr set?)") from None

"""What a run shows while it trains: a progress bar (or periodic log lines) and TensorBoard scalars."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger("seqtrain.progress")


class Progress:
    """tqdm bar with loss and frames/s on a terminal; a log line every `log_interval` steps otherwise."""

    def __init__(self, desc: str, enabled: bool | None, log_interval: int):
        self.desc = desc
        self.log_interval = max(log_interval, 1)
        self.steps = 0
        self.frames = 0
        self.seconds = 0.0
        self.bar = None
        if sys.stdout.isatty() if enabled is None else enabled:
            from tqdm import tqdm

            self.bar = tqdm(desc=desc, unit="step", dynamic_ncols=True, leave=False)

    def update(self, scores: dict[str, float], frames: int, seconds: float) -> None:
        self.steps += 1
        self.frames += frames
        self.seconds += seconds
        text = {k: f"{v:.3f}" for k, v in scores.items()}
        text["frames/s"] = f"{self.frames / max(self.seconds, 1e-9):.0f}"
        if self.bar is not None:
            self.bar.set_postfix(text, refresh=False)
            self.bar.update()
        elif self.steps % self.log_interval == 0:
            log.info("%s step %d: %s", self.desc, self.steps, " ".join(f"{k} {v}" for k, v in text.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        log.info(
            "%s: %d steps, %d frames in %.1f s of training steps, %.0f frames/s",
            self.desc,
            self.steps,
            self.frames,
            self.seconds,
            self.frames / max(self.seconds, 1e-9),
        )


class TensorBoard:
    """Step losses, learning rate, gradient norm and throughput per step; scores per epoch."""

    def __init__(self, log_dir: Path | None):
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))

    def step(
        self, step: int, scores: dict[str, float], lr: float, grad_norm: float | None, fps: float
    ) -> None:
        if self.writer is None:
            return
        for key, value in scores.items():
            self.writer.add_scalar(f"train_step/{key}", value, step)
        self.writer.add_scalar("train_step/learning_rate", lr, step)
        self.writer.add_scalar("train_step/frames_per_sec", fps, step)
        if grad_norm is not None:
            self.writer.add_scalar("train_step/grad_norm", grad_norm, step)

    def epoch(self, epoch: int, lr: float, scores: dict[str, float]) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("epoch/learning_rate", lr, epoch)
        for key, value in scores.items():
            self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

"""Sums of losses and frame errors over an epoch, reported per frame under RETURNN's score-key names."""

from __future__ import annotations

from collections import defaultdict

from seqtrain.layers.loss import LossValue


class ScoreAccumulator:
    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.frames: dict[str, float] = defaultdict(float)

    def add(self, losses: dict[str, LossValue]) -> dict[str, float]:
        """Add one batch; returns that batch's per-frame values (`score_<layer>`, `error_<layer>`)."""
        step = {}
        for layer, value in losses.items():
            frames = float(value.num_frames)
            measures = {f"score_{layer}": value.loss_sum, f"error_{layer}": value.errors}
            for key, total in measures.items():
                if total is None:
                    continue
                total = float(total.detach())
                self.sums[key] += total
                self.frames[key] += frames
                step[key] = total / max(frames, 1.0)
        return step

    def add_counts(self, counts: dict[str, tuple[float, float]]) -> None:
        """Add `{key: (errors, reference length)}`, e.g. WER counts; reported as errors / length."""
        for key, (errors, total) in counts.items():
            self.sums[key] += float(errors)
            self.frames[key] += float(total)

    def scores(self, prefix: str, dist=None) -> dict[str, float]:
        """Epoch values, e.g. `dev_score_output` (loss per frame), `dev_error_output` (frame error rate);
        with a DistContext, summed over all ranks first."""
        sums, frames = dict(self.sums), dict(self.frames)
        if dist is not None and dist.enabled:
            sums, frames = defaultdict(float), defaultdict(float)
            for rank_sums, rank_frames in dist.all_gather((dict(self.sums), dict(self.frames))):
                for key, value in rank_sums.items():
                    sums[key] += value
                    frames[key] += rank_frames[key]
        return {f"{prefix}_{key}": sums[key] / max(frames[key], 1.0) for key in sorted(sums)}

"""Checkpoint cleanup: RETURNN's keep rules (also against RETURNN's Engine.cleanup_old_models), best.pt."""

from __future__ import annotations

import io
import os
import random
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from seqtrain.cleanup import cleanup_old_models, default_keep_pattern, update_best_link
from seqtrain.config import CleanupConfig
from seqtrain.errors import ConfigError


def make_checkpoints(model_dir: Path, epochs) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        (model_dir / f"epoch.{epoch:03d}.pt").write_text(f"checkpoint {epoch}")


def remaining(model_dir: Path) -> list[int]:
    return sorted(int(p.name.split(".")[1]) for p in model_dir.glob("epoch.*.pt"))


def dev_scores(values: dict[int, float]) -> dict[int, dict[str, float]]:
    return {e: {"train_score_output": 10.0 - e, "dev_score_output": v} for e, v in values.items()}


def test_default_keep_pattern():
    assert default_keep_pattern(3) == set()
    assert default_keep_pattern(10) == {4, 5, 8, 10}
    assert default_keep_pattern(50) == {5, 10, 20, 40}
    assert default_keep_pattern(100) == {10, 20, 40, 80}
    assert default_keep_pattern(250) == {20, 40, 80, 160}  # keep_every = 80 * next_power_of_two(2)


def test_keeps_last_best_and_pattern(tmp_path):
    models = tmp_path / "models"
    make_checkpoints(models, range(1, 13))
    # best dev scores: epochs 3, 2, 6, 7 (in that order); last two: 11, 12; pattern for 12: 5, 10
    scores = dev_scores(
        {1: 9.0, 2: 2.0, 3: 1.0, 4: 5.0, 5: 6.0, 6: 3.0, 7: 4.0, 8: 7.0, 9: 8.0, 10: 9.5, 11: 9.6, 12: 9.7}
    )
    deleted = cleanup_old_models(models, scores, CleanupConfig(enabled=True), "dev_score_output")
    assert remaining(models) == [2, 3, 5, 6, 7, 10, 11, 12]
    assert deleted == [str(models / f"epoch.{e:03d}.pt") for e in (1, 4, 8, 9)]
    assert os.readlink(models / "best.pt") == "epoch.003.pt"
    assert (models / "best.pt").read_text() == "checkpoint 3"


def test_explicit_keep_and_small_numbers(tmp_path):
    models = tmp_path / "models"
    make_checkpoints(models, range(1, 8))
    scores = dev_scores({e: 10.0 - e for e in range(1, 8)})  # steadily better: the best are the last
    cfg = CleanupConfig(enabled=True, keep_last_n=1, keep_best_n=2, keep=[1])
    cleanup_old_models(models, scores, cfg, "dev_score_output")
    assert remaining(models) == [1, 6, 7]


def test_never_deletes_while_few_epochs(tmp_path):
    models = tmp_path / "models"
    make_checkpoints(models, range(1, 5))  # 4 epochs, keep_best_n 4
    scores = dev_scores({1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0})
    assert cleanup_old_models(models, scores, CleanupConfig(enabled=True, keep=[]), "dev_score_output") == []
    assert remaining(models) == [1, 2, 3, 4]


def test_disabled_only_updates_best_link(tmp_path):
    models = tmp_path / "models"
    make_checkpoints(models, range(1, 10))
    scores = dev_scores({e: abs(e - 4.0) for e in range(1, 10)})
    assert cleanup_old_models(models, scores, CleanupConfig(), "dev_score_output") == []
    assert remaining(models) == list(range(1, 10))
    assert os.readlink(models / "best.pt") == "epoch.004.pt"


def test_best_by_control_score_is_kept_even_without_dev_data(tmp_path):
    models = tmp_path / "models"
    make_checkpoints(models, range(1, 10))
    scores = {e: {"train_score_output": abs(e - 2.0)} for e in range(1, 10)}
    cfg = CleanupConfig(enabled=True, keep=[], keep_last_n=1, keep_best_n=1)
    cleanup_old_models(models, scores, cfg, "train_score_output")
    assert remaining(models) == [2, 9]  # best_by dev_ selects no key; the control score's best stays


def test_missing_and_nan_scores_count_as_worst(tmp_path):
    models = tmp_path / "models"
    make_checkpoints(models, range(1, 8))
    scores = dev_scores({1: float("nan"), 2: 5.0, 3: 4.0, 5: 3.0, 6: 6.0, 7: 7.0})
    cfg = CleanupConfig(enabled=True, keep=[], keep_last_n=1, keep_best_n=2)
    cleanup_old_models(models, scores, cfg, "dev_score_output")
    assert remaining(models) == [3, 5, 7]


def test_best_link_falls_back_to_a_copy(tmp_path, monkeypatch):
    models = tmp_path / "models"
    make_checkpoints(models, [1, 2])

    def no_symlinks(self, target):
        raise OSError("symlinks not supported")

    monkeypatch.setattr(Path, "symlink_to", no_symlinks)
    link = update_best_link(models, 2)
    assert not link.is_symlink() and link.read_text() == "checkpoint 2"
    assert sorted(p.name for p in models.iterdir()) == ["best.pt", "epoch.001.pt", "epoch.002.pt"]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cleanup_old_models.keep_last_n"):
        cleanup_old_models(tmp_path, {}, CleanupConfig(keep_last_n=0), None)


# --- against RETURNN's Engine.cleanup_old_models ---


def returnn_deleted(model_dir: Path, scores, options: dict, num_epochs: int) -> list[int]:
    pytest.importorskip("returnn.learning_rate_control")
    from returnn.config import Config
    from returnn.engine.base import EngineBase
    from returnn.learning_rate_control import LearningRateControl
    from returnn.log import log
    from returnn.util.basic import BackendEngine

    if not log.initialized:
        log.initialize(verbosity=[0])
    BackendEngine.selected_engine = BackendEngine.Torch  # its `model.NNN.pt` naming, which we share
    deleted = []

    class Engine(EngineBase):
        @staticmethod
        def delete_model(filename):
            deleted.append(int(filename.rsplit(".", 1)[1]))
            return 1

    config = Config(
        {
            "model": str(model_dir / "epoch"),
            "num_epochs": num_epochs,
            "task": "train",
            "cleanup_old_models": options,
            "learning_rate_control": "constant",
            "learning_rate": 1.0,
        }
    )
    with redirect_stdout(io.StringIO()):
        engine = Engine(config)
        engine.init_train_from_config(config)
        engine.learning_rate_control.epoch_data = {
            e: LearningRateControl.EpochData(learning_rate=1.0, error=dict(s)) for e, s in scores.items()
        }
        engine.cleanup_old_models()
    return sorted(deleted)


@pytest.mark.parametrize("seed", range(12))
def test_same_deletions_as_returnn(tmp_path, seed):
    rng = random.Random(seed)
    num_epochs = rng.choice([9, 30, 70, 130])
    models = tmp_path / "models"
    epochs = sorted(rng.sample(range(1, num_epochs + 1), k=min(num_epochs, rng.randint(6, 40))))
    make_checkpoints(models, epochs)
    scores = {
        e: {
            "dev_score_output": rng.uniform(1, 3),
            "dev_error_output": rng.uniform(0.1, 0.3),
            "train_score_output": rng.uniform(1, 3),
        }
        for e in range(1, num_epochs + 1)
    }
    for e in rng.sample(sorted(scores), k=num_epochs // 3):  # some epochs lack a key: it counts as worst
        del scores[e]["dev_error_output"]
    options = {"keep_last_n": rng.choice([1, 2, 3]), "keep_best_n": rng.choice([0, 2, 4])}
    if rng.random() < 0.3:
        options["keep"] = rng.sample(epochs, 2)
    expected = returnn_deleted(models, scores, options, num_epochs)
    cfg = CleanupConfig(enabled=True, best_by=[""], best_link=False, **options)  # "": every key, as RETURNN
    deleted = cleanup_old_models(models, scores, cfg, error_key=None)
    assert sorted(int(Path(p).name.split(".")[1]) for p in deleted) == expected

"""task=cleanup_old_models, average_checkpoints and analyze, against hand-worked values and the Engine."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
import torch

import seqtrain.tasks_model  # noqa: F401  (registers the tasks until seqtrain.tasks imports it)
from seqtrain import checkpoint
from seqtrain.app import Experiment
from seqtrain.errors import CheckpointError
from seqtrain.lr_control import LearningRateControl
from seqtrain.lr_file import EpochData
from seqtrain.tasks import run_task
from tests.conftest import compose

# The TaskConfig fields these tasks read, with their defaults (set here until config.py declares them).
TASK_DEFAULTS = {
    "average_num_best": 4,
    "average_epochs": None,
    "average_output": "averaged.pt",
    "analyze_histogram_bins": 20,
}
SMALL = [
    "dataset.train.num_seqs=60",
    "dataset.dev.num_seqs=20",
    "batching.max_seqs=8",
    "engine.progress_bar=false",
]


def experiment(run_dir, overrides=(), **task_fields) -> Experiment:
    cfg = compose(*SMALL, *overrides)
    for key, value in {**TASK_DEFAULTS, **task_fields}.items():
        if key in task_fields or not hasattr(cfg.task, key):
            setattr(cfg.task, key, value)
    return Experiment(cfg, run_dir)


def write_scores(run_dir, scores: dict[int, dict[str, float]]) -> None:
    control = LearningRateControl(compose().lr_control)
    control.epoch_data = {e: EpochData(0.01, dict(s)) for e, s in scores.items()}
    control.save(run_dir / "learning_rates")


def remaining(models) -> list[int]:
    return checkpoint.list_epochs(models)


# --- cleanup_old_models ---


def test_cleanup_task_applies_keep_rules_even_when_disabled(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for epoch in range(1, 9):
        (models / f"epoch.{epoch:03d}.pt").write_text("checkpoint")
    score = {1: 5.0, 2: 4.0, 3: 1.0, 4: 3.0, 5: 2.5, 6: 6.0, 7: 7.0, 8: 8.0}
    error = {1: 0.5, 2: 0.1, 3: 0.4, 4: 0.3, 5: 0.35, 6: 0.2, 7: 0.45, 8: 0.6}
    write_scores(
        tmp_path,
        {
            e: {"train_score_output": 0.1 * e, "dev_score_output": score[e], "dev_error_output": error[e]}
            for e in score
        },
    )
    rules = [
        "cleanup_old_models.keep_last_n=1",
        "cleanup_old_models.keep_best_n=2",
        "cleanup_old_models.keep=[4]",
    ]
    exp = experiment(tmp_path, ["task=cleanup_old_models", *rules])
    assert exp.cfg.cleanup_old_models.enabled is False
    run_task("cleanup_old_models", exp)
    # kept: 4 (keep), 8 (last 1), 3 and 5 (best 2 by dev_score_output), 2 and 6 (best 2 by dev_error_output)
    assert remaining(models) == [2, 3, 4, 5, 6, 8]
    assert os.readlink(models / "best.pt") == "epoch.003.pt"


def test_cleanup_task_needs_learning_rates(tmp_path):
    from seqtrain.errors import ConfigError

    with pytest.raises(ConfigError, match="no learning_rates file"):
        run_task("cleanup_old_models", experiment(tmp_path, ["task=cleanup_old_models"]))


# --- average_checkpoints ---

WEIGHTS = {1: [0.0, 1.0], 2: [1.0, 2.0], 3: [3.0, 6.0], 4: [10.0, 10.0]}


def write_checkpoints(models, epochs) -> None:
    for e in epochs:
        model = {
            "w": torch.tensor(WEIGHTS[e]),
            "h": torch.tensor([WEIGHTS[e][0]], dtype=torch.float16),
            "count": torch.tensor(100 * e),
        }
        checkpoint.save(
            checkpoint.checkpoint_path(models, e), {"epoch": e, "global_step": 10 * e, "model": model}
        )


def test_average_of_n_best_by_score(tmp_path):
    write_checkpoints(tmp_path / "models", [1, 2, 3, 4])
    write_scores(tmp_path, {e: {"dev_score_output": s} for e, s in {1: 3.0, 2: 1.0, 3: 2.0, 4: 4.0}.items()})
    run_task("average_checkpoints", experiment(tmp_path, ["task=average_checkpoints"], average_num_best=2))
    state = checkpoint.load(tmp_path / "models" / "averaged.pt")
    assert state["averaged_epochs"] == [2, 3] and state["epoch"] == 3 and state["global_step"] == 30
    assert torch.equal(state["model"]["w"], torch.tensor([2.0, 4.0]))  # (1+3)/2, (2+6)/2
    assert state["model"]["h"].dtype == torch.float16 and float(state["model"]["h"]) == 2.0
    assert int(state["model"]["count"]) == 300  # integer buffers from the last epoch, not averaged


def test_average_skips_unscored_and_deleted_epochs(tmp_path):
    write_checkpoints(tmp_path / "models", [1, 3, 4])  # epoch 2 (the best) was deleted; 4 has no score
    write_scores(
        tmp_path, {1: {"dev_score_output": 3.0}, 2: {"dev_score_output": 1.0}, 3: {"dev_score_output": 2.0}}
    )
    run_task("average_checkpoints", experiment(tmp_path, ["task=average_checkpoints"], average_num_best=3))
    state = checkpoint.load(tmp_path / "models" / "averaged.pt")
    assert state["averaged_epochs"] == [1, 3]
    assert torch.equal(state["model"]["w"], torch.tensor([1.5, 3.5]))


def test_average_of_given_epochs_to_given_path(tmp_path):
    write_checkpoints(tmp_path / "models", [1, 2, 3, 4])
    out = tmp_path / "elsewhere" / "avg.pt"
    exp = experiment(tmp_path, ["task=average_checkpoints"], average_epochs=[4, 1], average_output=str(out))
    run_task("average_checkpoints", exp)  # needs no learning_rates file
    state = checkpoint.load(out)
    assert state["averaged_epochs"] == [1, 4] and state["epoch"] == 4
    assert torch.equal(state["model"]["w"], torch.tensor([5.0, 5.5]))


def test_average_errors_name_the_culprit(tmp_path):
    write_checkpoints(tmp_path / "models", [1, 2])
    with pytest.raises(CheckpointError, match=r"no checkpoint for epochs \[7\].*there are: \[1, 2\]"):
        run_task("average_checkpoints", experiment(tmp_path, average_epochs=[1, 7]))
    state = checkpoint.load(checkpoint.checkpoint_path(tmp_path / "models", 2))
    state["model"]["w"] = torch.zeros(3)
    checkpoint.save(checkpoint.checkpoint_path(tmp_path / "models", 2), state)
    with pytest.raises(CheckpointError, match=r"epoch.002.pt: w has shape \(3,\), epoch.001.pt has \(2,\)"):
        run_task("average_checkpoints", experiment(tmp_path, average_epochs=[1, 2]))


# --- on a tiny trained model ---


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    exp = experiment(run_dir, ["engine.num_epochs=2", "engine.tensorboard=false"])
    exp.engine.train()
    return run_dir


def test_averaged_checkpoint_loads_into_the_network(trained, tmp_path):
    exp = experiment(
        trained, ["engine.tensorboard=false"], average_epochs=[1, 2], average_output=str(tmp_path / "a.pt")
    )
    run_task("average_checkpoints", exp)
    state = checkpoint.load(tmp_path / "a.pt")
    first, second = (
        checkpoint.load(checkpoint.checkpoint_path(trained / "models", e))["model"] for e in (1, 2)
    )
    exp.network.load_state_dict(state["model"])
    for key, value in exp.network.state_dict().items():
        assert torch.allclose(value, (first[key] + second[key]) / 2, atol=1e-7), key


def test_analyze_report_matches_engine_scores_and_data(trained, caplog):
    exp = experiment(
        trained, ["engine.log_interval=1", "engine.tensorboard=false"], analyze_histogram_bins=10
    )
    with caplog.at_level(logging.INFO, logger="seqtrain.tasks_model"):
        run_task("analyze", exp)
    report = json.loads((trained / "analyze" / "dev.epoch.002.json").read_text())
    assert (
        (trained / "analyze" / "dev.epoch.002.txt")
        .read_text()
        .startswith("dataset dev, epoch 2: 20 sequences")
    )
    assert "analyze dev batch 1: " in caplog.text

    engine = experiment(trained, ["engine.tensorboard=false"]).engine
    engine.load_checkpoint(2, model_only=True)
    expected = engine.score("dev")
    scores = report["scores"]
    assert scores["dev_score_output"] == pytest.approx(expected["dev_score_output"], rel=1e-6)
    assert scores["dev_error_output"] == pytest.approx(expected["dev_error_output"], rel=1e-6)
    assert scores["dev_ppl_output"] == pytest.approx(math.exp(expected["dev_score_output"]), rel=1e-6)

    dev = exp.datasets["dev"]
    lens = [dev.seq_len(i)["classes"] for i in range(dev.num_seqs)]
    assert report["seq_lens"]["classes"] == {
        "num_seqs": 20,
        "min": min(lens),
        "max": max(lens),
        "mean": pytest.approx(sum(lens) / 20),
        "total": sum(lens),
    }
    frames = sum(lens)
    max_prob, target_prob = (
        report["histograms"]["output"]["max_prob"],
        report["histograms"]["output"]["target_prob"],
    )
    assert sum(max_prob["counts"]) == sum(target_prob["counts"]) == frames
    # two classes: the max probability is >= 0.5, and the target's is > 0.5 exactly on the correct frames
    assert max_prob["counts"][:5] == [0] * 5
    correct = frames - round(scores["dev_error_output"] * frames)
    assert sum(target_prob["counts"][5:]) == correct


def test_analyze_writes_tensorboard_histograms(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_task("analyze", experiment(trained, ["engine.tensorboard=true"], dataset="dev"))
    tags = {"histograms": set(), "scalars": set()}
    for events in (trained / "tensorboard").iterdir():
        acc = EventAccumulator(str(events))
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
    assert {"analyze/dev/output/max_prob", "analyze/dev/output/target_prob"} <= tags["histograms"]
    assert "analyze/dev_ppl_output" in tags["scalars"]


def test_analyze_unknown_dataset(trained):
    from seqtrain.errors import ConfigError

    with pytest.raises(ConfigError, match=r"task.dataset: no dataset 'eval' configured"):
        run_task("analyze", experiment(trained, ["engine.tensorboard=false"], dataset="eval"))

"""The CLI end to end (subprocess, default experiment shortened), tasks, errors and a -m sweep."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, compose, run_cli

SHORT = ["dataset.train.num_seqs=100", "dataset.dev.num_seqs=20", "engine.num_epochs=2"]


def test_compose_groups_and_overrides():
    cfg = compose(
        "network=blstm_framewise", "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.9", "task=eval"
    )
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.lr == 0.1 and cfg.optimizer.momentum == 0.9
    assert cfg.lr_control.learning_rate == 0.1  # follows optimizer.lr
    assert cfg.task.name == "eval" and "lstm2_bw" in cfg.network.layers
    assert cfg.network.layers["lstm1_fw"]["n_out"] == cfg.network.vars["lstm_dim"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=search", "task.search.decoder=greedy", "task.search.beam_size=4", "task.search.lm_weight=0.3"],
        ["task=forward", "task.forward.output=log_softmax", "task.forward.dataset=train"],
        ["task=compute_priors", "task.priors.output_file=/tmp/priors.txt"],
        ["task=average_checkpoints", "task.average_num_best=2", "task.average_epochs=[1,2]"],
        ["task=analyze", "task.dataset=dev", "task.analyze_histogram_bins=10"],
        ["task=dump", "task.dataset=train", "task.output_file=x.hdf"],
        ["task=cleanup_old_models", "cleanup_old_models.keep_best_n=1"],
        ["distributed.backend=gloo", "distributed.find_unused_parameters=true"],
        ["pretrain.enabled=true", "pretrain.repetitions=2"],
    ],
)
def test_every_task_option_can_be_set_from_the_command_line(overrides):
    from seqtrain.tasks import TASKS

    assert compose(*overrides).task.name in TASKS


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lrr=0.1", "optimizer.lrr"),
        ("engine.num_epochs=many", "engine.num_epochs"),
        ("network=lstmm", "network"),
    ],
)
def test_compose_errors_name_the_key(override, message):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with pytest.raises((HydraException, OmegaConfBaseException), match=message):
        compose(override)


@pytest.mark.slow
def test_cli_trains_and_writes_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(*SHORT, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (
        run_dir / ".hydra" / "overrides.yaml"
    ).is_file()
    log = (run_dir / "train.log").read_text()
    assert "epoch 2: lr 0.01" in log and "dev_error_output" in log and "frames/s" in log
    assert sorted(p.name for p in (run_dir / "models").iterdir()) == [
        "best.pt",
        "epoch.001.pt",
        "epoch.002.pt",
    ]
    assert "2: EpochData(learningRate=0.01" in (run_dir / "learning_rates").read_text()
    tags = tensorboard_tags(run_dir / "tensorboard")
    assert {
        "train_step/score_output",
        "train_step/learning_rate",
        "train_step/grad_norm",
        "train_step/frames_per_sec",
        "epoch/dev_error_output",
        "epoch/learning_rate",
    } <= tags

    # the same run dir resumes: nothing left to do at 2 epochs, one more epoch with num_epochs=3
    again = run_cli(*SHORT[:2], "engine.num_epochs=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "loaded" in again.stderr + again.stdout or "loaded" in (run_dir / "train.log").read_text()
    assert (run_dir / "models" / "epoch.003.pt").is_file()

    # task=eval scores the last checkpoint; load_epoch picks another
    ev = run_cli(*SHORT, "task=eval", "task.load_epoch=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    scores = json.loads((run_dir / "eval" / "epoch.002.json").read_text())
    assert scores["epoch"] == 2 and 0 <= scores["scores"]["dev_error_output"] <= 1


def tensorboard_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in folder.iterdir():
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_tasks_nop_init_and_initialize_model(tmp_path):
    nop = run_cli("task=nop", f"hydra.run.dir={tmp_path / 'nop'}", cwd=tmp_path)
    assert nop.returncode == 0 and "nothing built" in nop.stderr + nop.stdout
    init = run_cli("task=nop_init_net_train", f"hydra.run.dir={tmp_path / 'init'}", cwd=tmp_path)
    out = init.stderr + init.stdout
    assert (
        init.returncode == 0
        and "RecLayer(9 -> 32, unit=lstm, direction=1)" in out
        and "parameters: 5442 in 5 tensors; optimizer Adam" in out
    )
    model = run_cli("task=initialize_model", f"hydra.run.dir={tmp_path / 'm'}", cwd=tmp_path)
    assert model.returncode == 0
    state = torch.load(tmp_path / "m" / "models" / "epoch.000.pt", weights_only=True)
    assert state["epoch"] == 0 and "layers.lstm.weight_ih" in state["model"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimizer.lrr=0.1"], "optimizer.lrr"),
        (["network.layers.output.class=sofmax"], "network.layers.output.class: unknown layer class 'sofmax'"),
        (["dataset.train.seq_ordering=shuffle"], "dataset.train.seq_ordering: invalid 'shuffle'"),
        (["task=eval"], "no checkpoint (train first"),
        # out of their declared ranges: a negative clip norm flipped the gradients, 0 divided by zero
        (["engine.gradient_clip_global_norm=-1"], "engine.gradient_clip_global_norm: must be > 0, got -1.0"),
        (["engine.save_interval=0"], "engine.save_interval: must be >= 1, got 0"),
    ],
)
def test_user_errors_exit_2_without_traceback(tmp_path, args, message):
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    output = result.stderr + result.stdout
    assert result.returncode == 2, output
    assert message in output and "Traceback" not in output


def test_broken_checkpoint_is_refused(tmp_path):
    (tmp_path / "r" / "models").mkdir(parents=True)
    (tmp_path / "r" / "models" / "epoch.003.pt").write_bytes(b"\x80\x04garbage")
    result = run_cli(*SHORT, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    assert (
        result.returncode == 2 and "epoch.003.pt: not a readable checkpoint" in result.stderr + result.stdout
    )


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local_parallel"])
def test_multirun_sweep_gets_one_dir_per_job_and_a_summary(tmp_path, launcher):
    if launcher != "basic":
        pytest.importorskip(
            "hydra_plugins.hydra_joblib_launcher", reason="joblib launcher plugin not installed"
        )
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        f"hydra/launcher={launcher}",
        "optimizer.lr=0.01,0.003",
        *SHORT[:2],
        "engine.num_epochs=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    dirs = sorted(p.name for p in sweep.iterdir() if p.is_dir())  # named by job number and overrides
    assert len(dirs) == 2 and dirs[0].startswith("0_") and dirs[0].endswith("optimizer.lr=0.01")
    assert dirs[1].startswith("1_") and dirs[1].endswith("optimizer.lr=0.003")
    for job, lr in zip(dirs, ("0.01", "0.003")):
        assert (sweep / job / "models" / "epoch.001.pt").is_file()
        assert f"learningRate={lr}" in (sweep / job / "learning_rates").read_text()

    summary = subprocess.run(
        [sys.executable, "-m", "seqtrain.summary", str(sweep)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert summary.returncode == 0, summary.stderr
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [float(r["best"]) for r in rows] == sorted(float(r["best"]) for r in rows)
    for job in dirs:
        row = next(r for r in rows if r["job"] == job)
        assert job.rsplit(",", 1)[-1] in row["overrides"].split()
        dev = (sweep / job / "learning_rates").read_text().split("'dev_score_output': ")[1].split(",")[0]
        assert float(row["best"]) == pytest.approx(float(dev)) and row["best_epoch"] == "1"
    assert "optimizer.lr=0.003" in summary.stdout and "best_epoch" in summary.stdout


def test_dump_writes_a_dataset_to_hdf_that_reads_back(tmp_path):
    h5py = pytest.importorskip("h5py")
    out = tmp_path / "dev.hdf"
    result = run_cli(
        "task=dump",
        "task.dataset=dev",
        f"task.output_file={out}",
        "dataset.dev.num_seqs=7",
        f"hydra.run.dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    cfg = compose("dataset.dev.num_seqs=7")
    from seqtrain.datasets import build_dataset

    dev = build_dataset(cfg.dataset.dev, "dataset.dev")
    dev.init_epoch(1)
    with h5py.File(out) as f:
        tags = [t.decode() if isinstance(t, bytes) else t for t in f["seqTags"][()]]
        assert sorted(tags) == sorted(dev.seq_tag(i) for i in range(7))
        lens = f["seqLengths"][()]
        start = 0
        for tag, (n_in, n_cls) in zip(tags, lens):
            seq = dev.get_seq(int(tag.split("-")[1]))
            assert n_in == n_cls == len(seq["data"])
            assert (f["inputs"][start : start + n_in] == seq["data"]).all()
            assert (f["targets/data/classes"][start : start + n_in] == seq["classes"]).all()
            start += n_in

"""DDP on CPU with Gloo: 2 processes under torchrun against a single process over the same global batches."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_cli

# 80 sequences in batches of 10: 8 global batches, 4 steps of 2; no dropout, so both runs compute alike
SHORT = [
    "dataset.train.num_seqs=80",
    "dataset.dev.num_seqs=30",
    "batching.max_seqs=10",
    "batching.batch_size=100000",
    "engine.num_epochs=1",
    "engine.progress_bar=false",
]


def torchrun(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        "-m",
        "seqtrain",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    ddp = torchrun(*SHORT, f"hydra.run.dir={tmp_path / 'ddp'}", cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_cli(
        *SHORT, "engine.accum_grad_multiple_step=2", f"hydra.run.dir={tmp_path / 'one'}", cwd=tmp_path
    )
    assert single.returncode == 0, single.stderr[-3000:]

    a = torch.load(tmp_path / "ddp" / "models" / "epoch.001.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "models" / "epoch.001.pt", weights_only=True)
    assert a["global_step"] == 4 and b["global_step"] == 8  # 4 steps per rank; 8 micro-steps, 4 updates
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    assert len(a["rng"]) == 2  # each rank's RNG state, for an exact resume

    # rank 1 wrote nothing of its own: one TensorBoard file, rank 0's log lines only (no [rank 1] info lines)
    run = tmp_path / "ddp"
    assert len(list((run / "tensorboard").iterdir())) == 1
    log = (run / "train.log").read_text()
    assert "rank 0 of 2 joined" in log and "[rank 1]" not in log
    scores = (run / "learning_rates").read_text()
    assert "'dev_score_output'" in scores and "global_train_step': 4" in scores
    assert list(tmp_path.glob("outputs")) == []  # no stray per-rank run dirs


@pytest.mark.slow
def test_ranks_share_one_run_dir_by_default(tmp_path):
    result = torchrun(*SHORT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list((tmp_path / "outputs").glob("*/*"))
    assert len(run_dirs) == 1 and (run_dirs[0] / "models" / "epoch.001.pt").is_file()

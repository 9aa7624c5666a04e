"""Shared test helpers: the shared data folder and running seqtrain in-process or as a CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m seqtrain ARGS` in a subprocess (progress bar off, so the output is plain log lines)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": ""}
    env.pop("HYDRA_FULL_ERROR")
    return subprocess.run(
        [sys.executable, "-m", "seqtrain", *args, "engine.progress_bar=false"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compose(*overrides: str):
    """The composed config (Hydra's compose API) as the typed Config object."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    import seqtrain.app  # noqa: F401  (registers the schemas)

    with initialize_config_module("seqtrain.conf", version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


SEQ_ORDERINGS = [
    "default",
    "reverse",
    "sorted",
    "sorted_reverse",
    "random",
    "random:2",
    "laplace:3",
    "laplace:.20",
    "sort_bin_shuffle:3",
    "sort_bin_shuffle_x2:.20",
]


def check_epoch_order(ds, mode: str, parts: int) -> None:
    """The sub-epochs of one full epoch visit every sequence once; `sorted` sorts by the data length."""
    seen = []
    for epoch in range(1, parts + 1):
        ds.init_epoch(epoch)
        seen += ds.seq_order.tolist()
    assert sorted(seen) == list(range(ds.num_seqs)), mode
    if mode == "sorted" and parts == 1:
        lens = [ds.seq_len(i)["data"] for i in seen]
        assert lens == sorted(lens)


def assert_same_batches_with_workers(ds, batch_size: int = 1000, max_seqs: int = 16, epochs=(1, 2)) -> None:
    """0 and 2 DataLoader workers give the same batches (tags and data), epoch after epoch."""
    import torch

    from seqtrain.config import BatchingConfig
    from seqtrain.data import iterate_batches

    def run(workers):
        cfg = BatchingConfig(batch_size=batch_size, max_seqs=max_seqs, num_workers=workers)
        return [
            (b.tags, {k: v.clone() for k, v in b.data.items()})
            for e in epochs
            for b in iterate_batches(ds, cfg, e, train=True)
        ]

    ref, got = run(0), run(2)
    assert [t for t, _ in ref] == [t for t, _ in got] and len(ref) > 2
    assert all(torch.equal(a[k], b[k]) for (_, a), (_, b) in zip(ref, got) for k in a)

import random

import numpy as np
import pytest
import torch

from seqtrain import checkpoint
from seqtrain.errors import CheckpointError


def test_round_trip_and_listing(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "rng": checkpoint.rng_state()}
    checkpoint.save(checkpoint.checkpoint_path(tmp_path, 3), state)
    checkpoint.save(checkpoint.checkpoint_path(tmp_path, 12), state)
    (tmp_path / "epoch.004.pt.tmp").write_bytes(b"half-written")  # a crash leaves only a .tmp
    (tmp_path / "notes.txt").write_text("x")
    assert checkpoint.list_epochs(tmp_path) == [3, 12]
    assert [p.name for p in sorted(tmp_path.glob("epoch.*.pt"))] == ["epoch.003.pt", "epoch.012.pt"]
    loaded = checkpoint.load(tmp_path / "epoch.003.pt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))


def test_rng_state_restores_every_generator():
    state = checkpoint.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    checkpoint.set_rng_state(state)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_broken_and_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    checkpoint.save(good, {"epoch": 1})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        checkpoint.load(truncated)
    with pytest.raises(CheckpointError, match="foreign.pt: not a seqtrain checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable checkpoint"):
        checkpoint.load(garbage)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_save_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "epoch.001.pt"
    checkpoint.save(path, {"epoch": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save(path, {"epoch": 2})
    assert checkpoint.load(path)["epoch"] == 1  # the old file is untouched

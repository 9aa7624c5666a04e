"""Shared by the kernel tests: NaN-poisoned outputs and skipping what this machine cannot run."""

import pytest
import torch

from seqtrain import ops

IMPLS = ["native", "reference"]


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Outputs start as NaN, so an element the kernel forgets to write fails the comparison."""
    monkeypatch.setenv("SEQTRAIN_OPS_POISON", "1")


def need(impl, device="cpu"):
    if impl == "native" and not ops.native_available():
        pytest.skip(
            "native kernels did not build (see the seqtrain.ops.build log); reference tests still run"
        )
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")

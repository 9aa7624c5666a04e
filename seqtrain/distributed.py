"""Multi-process training with torch.distributed under `torchrun`: process group, rank-0-only writing,
score reduction, and one shared run directory for all ranks."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

import torch
import torch.distributed as dist

from seqtrain.config import DistributedConfig

log = logging.getLogger(__name__)


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def shared_start_time() -> datetime:
    """Rank 0's start time, handed to every rank through torchrun's store, so that all ranks resolve the same
    Hydra run directory (`${seqtrain_now:...}` in conf/config.yaml) instead of one per rank."""
    now = datetime.now()
    if env_world_size() == 1 or "MASTER_ADDR" not in os.environ:
        return now
    # torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE); workers connect as clients.
    is_server = env_rank() == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        env_world_size(),
        is_master=is_server,
        timeout=timedelta(seconds=300),
    )
    key = f"seqtrain/start_time/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if env_rank() == 0:
        store.set(key, now.isoformat())
    return datetime.fromisoformat(store.get(key).decode())


@dataclass
class DistContext:
    """Where this process stands: its rank among `world_size` processes (1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, the score file, TensorBoard and the progress bar."""
        return self.rank == 0

    @classmethod
    def setup(cls, cfg: DistributedConfig, device: torch.device) -> DistContext:
        """Join the process group when started by torchrun (WORLD_SIZE > 1); NCCL on GPUs, Gloo on CPUs."""
        ctx = cls(env_rank(), env_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        if ctx.enabled and not dist.is_initialized():
            backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
            dist.init_process_group(backend, timeout=timedelta(seconds=cfg.timeout))
            log.info("rank %d of %d joined the process group (%s)", ctx.rank, ctx.world_size, backend)
        return ctx

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def all_gather(self, obj):
        """Every rank's `obj`, by rank (a list of one when not distributed)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def shutdown() -> None:
    """Leaves the process group before the interpreter exits: a group left to interpreter shutdown can abort
    the process as it tears down (Gloo: "terminate called without an active exception", exit -6)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def configure_rank_logging() -> None:
    """On ranks > 0: only warnings and errors, marked with the rank, still reach the console and the log."""
    rank = env_rank()
    if rank == 0:
        return
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in root.handlers:
        fmt = handler.formatter._fmt if handler.formatter else "%(message)s"
        handler.setFormatter(logging.Formatter(f"[rank {rank}] {fmt}"))

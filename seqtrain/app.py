"""The Hydra entry point: compose the config, build the parts on demand, run the task. No training logic."""

from __future__ import annotations

import functools
import logging
import os
import sys
from functools import cached_property
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqtrain import distributed, memory
from seqtrain.config import Config, check_ranges, register_configs
from seqtrain.errors import ConfigError, SeqtrainError

log = logging.getLogger("seqtrain")
register_configs()


@functools.cache
def _start_time():
    return distributed.shared_start_time()


def _now(fmt: str) -> str:
    """The run dir's timestamp: under torchrun, rank 0's start time, so that all ranks share one run dir."""
    return _start_time().strftime(fmt)


OmegaConf.register_new_resolver("seqtrain_now", _now, replace=True)
_task_started = False  # tells main() whether a failure came from Hydra's composition or from the task


class Experiment:
    """The parts of one run, each built the first time a task asks for it."""

    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir

    @cached_property
    def datasets(self) -> dict:
        from seqtrain.datasets import build_dataset

        ds_cfg = self.cfg.dataset
        if ds_cfg.train is None and ds_cfg.dev is None and ds_cfg.eval is None:
            raise ConfigError("dataset: no train, dev or eval dataset configured")
        return {
            name: build_dataset(getattr(ds_cfg, name), f"dataset.{name}") for name in ("train", "dev", "eval")
        }

    @property
    def extern_data(self) -> dict:
        return next(ds for ds in self.datasets.values() if ds is not None).extern_data

    def build_network(self, layers: dict):
        from seqtrain.network import Network

        return Network(layers, self.extern_data)

    @cached_property
    def engine(self):
        from seqtrain.engine import Engine

        torch.manual_seed(self.cfg.engine.seed)
        return Engine(self.cfg, self.build_network, self.datasets, self.run_dir)

    @property
    def network(self):
        return self.engine.network


def to_config(cfg: DictConfig) -> Config:
    """The typed config object; interpolation errors and numbers out of range name the key."""
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        raise ConfigError(f"{key}: {exc.msg}" if key else str(exc)) from None
    check_ranges(typed)
    return typed


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def run(dict_cfg: DictConfig) -> None:
    global _task_started
    _task_started = True
    distributed.configure_rank_logging()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = to_config(dict_cfg)
        if cfg.engine.num_threads:
            torch.set_num_threads(cfg.engine.num_threads)
        if cfg.engine.keep_freed_memory:
            memory.keep_freed_memory()
        log.info("run dir: %s; task: %s", run_dir, cfg.task.name)
        from seqtrain.tasks import run_task

        run_task(cfg.task.name, Experiment(cfg, run_dir))
    except SeqtrainError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", exc)
        sys.exit(2)
    finally:
        distributed.shutdown()


def main() -> None:
    """`python -m seqtrain`: user mistakes exit with status 2 and one line, bugs with a traceback."""
    if distributed.env_rank() > 0:
        sys.argv.append("hydra.output_subdir=null")  # only rank 0 writes .hydra/
    try:
        run()
    except SystemExit as exc:
        # Hydra reports composition errors (unknown key, wrong type, missing group) itself, then exits 1.
        if exc.code == 1 and not _task_started:
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()

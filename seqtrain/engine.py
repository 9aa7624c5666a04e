"""Engine: the training and scoring loops, checkpoints and resume. Nothing model-specific lives here.

Each epoch: train steps → dev/eval scores → LR control → learning_rates file → checkpoint → TensorBoard.
A run directory that already has checkpoints continues from the last one with identical results.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch

from seqtrain import checkpoint
from seqtrain.cleanup import cleanup_old_models
from seqtrain.config import Config
from seqtrain.data import Batch, BatchLoader
from seqtrain.datasets.base import Dataset
from seqtrain.distributed import DistContext
from seqtrain.errors import TrainingError
from seqtrain.lr_control import build_lr_control
from seqtrain.network import Network
from seqtrain.optim import build_optimizer, set_learning_rate
from seqtrain.pretrain import build_pretrain, copy_params_by_name, remap_optimizer_state
from seqtrain.reporting import Progress, TensorBoard
from seqtrain.scores import ScoreAccumulator
from seqtrain.search import score_ctc_greedy

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Engine:
    """`build_network(layer_dict)` makes a Network for the configured data; pretraining calls it per stage."""

    def __init__(self, cfg: Config, build_network, datasets: dict[str, Dataset], run_dir: Path):
        self.cfg = cfg
        self.device = pick_device(cfg.engine.device)
        self.dist = DistContext.setup(cfg.distributed, self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.build_network = build_network
        self.datasets = datasets
        self.run_dir = Path(run_dir)
        self.model_dir = self.run_dir / cfg.model_dir
        self.pretrain = build_pretrain(cfg.pretrain, cfg.network.layers)
        self.layers = self.pretrain.layers_for_epoch(1) if self.pretrain else dict(cfg.network.layers)
        self.network = build_network(self.layers).to(self.device)
        self.model = self.wrap(self.network)
        self.optimizer = build_optimizer(cfg.optimizer, self.network.parameters())
        self.lr_control = build_lr_control(cfg.lr_control)
        self.epoch = 0  # the last finished epoch
        self.global_step = 0
        amp = cfg.engine.torch_amp
        self.amp_dtype = {None: None, "bfloat16": torch.bfloat16, "float16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.loaders: dict[tuple[str, bool], BatchLoader] = {}
        self.tb = TensorBoard(
            self.run_dir / "tensorboard" if cfg.engine.tensorboard and self.dist.is_main else None
        )

    def wrap(self, network: Network) -> torch.nn.Module:
        """The module the training step calls: DistributedDataParallel when several processes train."""
        if not self.dist.enabled:
            return network
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            network, device_ids=device_ids, find_unused_parameters=self.cfg.distributed.find_unused_parameters
        )

    # --- checkpoints ---
    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_control": self.lr_control.state_dict(),
            # every rank's RNG (dropout differs per rank), so each resumes its own stream
            "rng": self.dist.all_gather(checkpoint.rng_state()),
        }

    def save_checkpoint(self) -> Path:
        """Called on every rank (the RNG states are gathered); only the main process writes."""
        path = checkpoint.checkpoint_path(self.model_dir, self.epoch)
        state = self.state_dict()
        if self.dist.is_main:
            checkpoint.save(path, state)
            log.info("saved %s", path)
        return path

    def load_checkpoint(self, epoch: int, model_only: bool = False) -> None:
        self.load_checkpoint_file(checkpoint.checkpoint_path(self.model_dir, epoch), model_only)

    def load_checkpoint_file(self, path: Path, model_only: bool = False) -> None:
        """A checkpoint by path (e.g. models/averaged.pt, which holds the model only: load it model_only)."""
        state = checkpoint.load(path, self.device)
        if self.pretrain:  # a checkpoint from a pretrain stage holds that stage's network
            self.use_layers(self.pretrain.layers_for_epoch(max(state["epoch"], 1)), carry_over=False)
        try:
            self.network.load_state_dict(state["model"])
        except RuntimeError as exc:
            from seqtrain.errors import CheckpointError

            raise CheckpointError(
                f"{path}: does not fit the configured network: {str(exc).splitlines()[0]}"
            ) from None
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        if not model_only:
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_control.load_state_dict(state["lr_control"])
            rngs = state["rng"]
            checkpoint.set_rng_state(rngs[self.dist.rank % len(rngs)])
        log.info("loaded %s (epoch %d, step %d)", path, self.epoch, self.global_step)

    def resume(self) -> None:
        """Continue from the last checkpoint in the run dir, if any."""
        epochs = checkpoint.list_epochs(self.model_dir)
        if epochs:
            self.load_checkpoint(epochs[-1])

    # --- training ---
    def train(self) -> None:
        self.resume()
        if self.epoch >= self.cfg.engine.num_epochs:
            log.info("already trained %d of %d epochs; nothing to do", self.epoch, self.cfg.engine.num_epochs)
        while self.epoch < self.cfg.engine.num_epochs:
            epoch = self.epoch + 1
            lr = self.start_epoch(epoch)
            train_scores = self.train_epoch(epoch, lr)
            self.epoch = epoch
            scores = {**train_scores, **self.score_datasets(["dev", "eval"])}
            self.lr_control.set_epoch_scores(epoch, scores)
            self.lr_control.set_epoch_meta(epoch, {"global_train_step": self.global_step})
            if self.dist.is_main:
                self.lr_control.save(str(self.run_dir / "learning_rates"))
            self.log_epoch(epoch, lr, scores)
            is_last = epoch == self.cfg.engine.num_epochs
            if epoch % self.cfg.engine.save_interval == 0 or is_last:
                self.save_checkpoint()
            if self.dist.is_main and (epoch % self.cfg.engine.save_interval == 0 or is_last):
                cleanup_old_models(
                    self.model_dir,
                    {e: d.error for e, d in self.lr_control.epoch_data.items()},
                    self.cfg.cleanup_old_models,
                    self.lr_control.error_key(),
                )
        self.tb.close()

    def start_epoch(self, epoch: int) -> float:
        """The epoch's learning rate; with pretraining, first grow the network to the epoch's stage."""
        if not self.pretrain:
            return self.lr_control.learning_rate(epoch)
        stage = self.pretrain.stage_for_epoch(epoch)
        self.use_layers(self.pretrain.layers_for_epoch(epoch), carry_over=True, epoch=epoch)
        lr = self.pretrain.learning_rate(epoch, self.lr_control)
        log.info("epoch %d: pretrain stage %s", epoch, "final (full network)" if stage is None else stage + 1)
        self.tb.scalar("epoch/pretrain_stage", -1 if stage is None else stage + 1, epoch)
        return lr

    def use_layers(self, layers: dict, carry_over: bool, epoch: int = 0) -> None:
        """Rebuild the network (and optimizer) from `layers` if they changed; parameters and optimizer state
        are copied by name when `carry_over`."""
        if layers == self.layers:
            return
        old_network, old_optimizer = self.network, self.optimizer.state_dict()
        old_names = optimizer_param_names(old_network, self.optimizer)
        self.network = self.build_network(layers).to(self.device)
        self.optimizer = build_optimizer(self.cfg.optimizer, self.network.parameters())
        self.layers = layers
        if carry_over:
            skip = self.pretrain.skip_copy_layers(epoch)
            new_names = optimizer_param_names(self.network, self.optimizer)
            lines = copy_params_by_name(old_network.state_dict(), self.network, skip)
            lines += remap_optimizer_state(old_optimizer, old_names, self.optimizer, new_names, skip)
            for line in lines:
                log.info("epoch %d network change: %s", epoch, line)
        self.model = self.wrap(self.network)  # after the copy: DDP broadcasts rank 0's parameters

    def train_epoch(self, epoch: int, lr: float) -> dict[str, float]:
        self.network.train()
        engine_cfg = self.cfg.engine
        accum = engine_cfg.accum_grad_multiple_step
        totals = ScoreAccumulator()
        show = engine_cfg.progress_bar if self.dist.is_main else False
        progress = Progress(f"epoch {epoch}", show, engine_cfg.log_interval)
        batches = self.batches("train", epoch, train=True)
        step_in_epoch = -1
        self.optimizer.zero_grad(set_to_none=True)
        for step_in_epoch, (batch, data, is_last) in enumerate(_with_last(batches)):
            start = time.perf_counter()
            step_lr = lr * self.lr_control.step_factor(self.global_step)
            set_learning_rate(self.optimizer, step_lr)
            do_update = (step_in_epoch + 1) % accum == 0 or is_last
            # between updates, DDP need not all-reduce: gradients only accumulate (torch's no_sync)
            sync = nullcontext() if do_update or not self.dist.enabled else self.model.no_sync()
            with sync:
                with self.autocast():
                    outputs = self.model(data)
                    losses = self.network.losses(outputs, data)
                    total = self.network.total_loss(losses)
                if not self.check_finite(total, losses, batch, epoch, step_in_epoch):
                    self.optimizer.zero_grad(set_to_none=True)
                    continue
                self.scaler.scale(total / accum if accum > 1 else total).backward()
            grad_norm = self.update() if do_update else None
            frames = batch.num_frames()
            step_scores = totals.add(losses)
            self.global_step += 1
            elapsed = time.perf_counter() - start
            progress.update(step_scores, frames, elapsed)
            self.tb.step(self.global_step, step_scores, step_lr, grad_norm, frames / max(elapsed, 1e-9))
        progress.close()
        if step_in_epoch < 0:
            raise TrainingError(
                f"epoch {epoch}: the training data gave no batch (check dataset.train and "
                "batching.max_seq_length/min_seq_length)"
            )
        return self.with_perplexity(totals.scores("train", self.dist), "train")

    def update(self) -> float:
        """One optimizer step with optional global-norm clipping; returns the gradient norm."""
        self.scaler.unscale_(self.optimizer)
        cfg = self.cfg.engine
        params = [p for p in self.network.parameters() if p.grad is not None]
        if cfg.gradient_noise:
            for p in params:
                p.grad.add_(torch.randn_like(p.grad), alpha=cfg.gradient_noise)
        if cfg.gradient_clip:
            torch.nn.utils.clip_grad_value_(params, cfg.gradient_clip)
        clip = cfg.gradient_clip_global_norm
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def check_finite(self, total: torch.Tensor, losses, batch: Batch, epoch: int, step: int) -> bool:
        """False for a NaN/inf loss (the step is skipped), or a TrainingError naming the batch's sequences."""
        value = float(total.detach())
        if math.isfinite(value):
            return True
        per_layer = ", ".join(f"{k}={float(v.loss_sum.detach()):.4g}" for k, v in losses.items())
        tags = ", ".join(batch.tags[:10]) + (" ..." if len(batch.tags) > 10 else "")
        message = (
            f"epoch {epoch} step {step} (global step {self.global_step}): loss is {value} "
            f"({per_layer}); sequences: {tags}"
        )
        if self.cfg.engine.stop_on_nonfinite_train_score:
            raise TrainingError(message)
        log.warning("%s; update skipped (engine.stop_on_nonfinite_train_score is false)", message)
        return False

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # --- scoring ---
    def score_datasets(self, names: list[str]) -> dict[str, float]:
        scores = {}
        for name in names:
            if self.datasets.get(name) is not None:
                scores.update(self.score(name))
        return scores

    @torch.no_grad()
    def score(self, name: str) -> dict[str, float]:
        """Loss per frame (`{name}_score_{layer}`), frame error rate (`{name}_error_{layer}`) and, for ctc
        layers, greedy WER/CER (`{name}_wer_{layer}`, `{name}_cer_{layer}`)."""
        self.network.eval()
        totals = ScoreAccumulator()
        for _, data, _ in _with_last(self.batches(name, self.epoch or 1, train=False)):
            with self.autocast():
                outputs = self.network(data)
                totals.add(self.network.losses(outputs, data))
            totals.add_counts(score_ctc_greedy(self.network, outputs, data))  # dev WER/CER of ctc layers
        return self.with_perplexity(totals.scores(name, self.dist), name)

    def with_perplexity(self, scores: dict[str, float], prefix: str) -> dict[str, float]:
        """Adds perplexity and bits per label for `ce` layers with `loss_opts: {perplexity: true}` (LMs)."""
        for name in self.network.loss_layers:
            opts = self.network.layers[name].opts
            score = scores.get(f"{prefix}_score_{name}")
            if opts.loss == "ce" and opts.loss_opts.get("perplexity") and score is not None:
                scores[f"{prefix}_ppl_{name}"] = math.exp(min(score, 700.0))
                scores[f"{prefix}_bits_{name}"] = score / math.log(2)
        return scores

    def batches(self, name: str, epoch: int, train: bool) -> Iterator[tuple[Batch, dict]]:
        key = (name, train)
        if key not in self.loaders:
            # training shards must run equally many steps (DDP); scoring shards need not, sums are reduced
            self.loaders[key] = BatchLoader(
                self.datasets[name],
                self.cfg.batching,
                train,
                self.dist.world_size,
                self.dist.rank,
                equal_steps=train,
            )
        ds = self.datasets[name]
        for batch in self.loaders[key].epoch(epoch):
            yield batch, batch.tensors(ds.extern_data, self.device)

    def log_epoch(self, epoch: int, lr: float, scores: dict[str, float]) -> None:
        text = " ".join(f"{k} {v:.4g}" for k, v in sorted(scores.items()))
        log.info("epoch %d: lr %.4g %s", epoch, lr, text)
        self.tb.epoch(epoch, lr, scores)


def optimizer_param_names(network: Network, optimizer: torch.optim.Optimizer) -> list[str]:
    """Parameter names in the optimizer's order (its param groups may reorder them)."""
    names = {id(p): n for n, p in network.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _with_last(items):
    """Yield (*item, is_last) so the caller knows the last element without materializing the list."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield (*prev, False)
        prev = item
    yield (*prev, True)

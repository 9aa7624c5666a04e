"""The config schema: every user-facing option, declared once with its type, default and help.

Hydra composes `conf/config.yaml` and the groups over these dataclasses, so a typo in a key or a value of
the wrong type stops at start-up with the key's full path, and check_ranges does the same for a number outside
its option's declared range. The free-form parts (the layer dict of `network`, the dataset dicts) are
validated by their registries when they are built, with the same kind of message.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any  # noqa: UP035  (OmegaConf needs typing generics)

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from seqtrain.errors import ConfigError


def opt(  # noqa: A002  (help)
    default: Any = MISSING,
    help: str = "",
    factory: Any = None,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with a one-line help (shown in the README's configuration reference) and, for a
    number, its range: ge (at least) or gt (above), and lt (below); check_ranges enforces them."""
    metadata = {"help": help, "ge": ge, "gt": gt, "lt": lt}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _bounds(f: Field) -> tuple[float | None, float | None, float | None]:
    return f.metadata.get("ge"), f.metadata.get("gt"), f.metadata.get("lt")


def range_text(f: Field) -> str:
    """A field's declared range as the README shows it ('' for none)."""
    ge, gt, lt = _bounds(f)
    low = f">= {ge}" if ge is not None else f"> {gt}" if gt is not None else ""
    return " and ".join(part for part in (low, f"< {lt}" if lt is not None else "") if part)


def check_ranges(config: Any, prefix: str = "") -> None:
    """Raises ConfigError naming the first option (by its full key) whose number is outside its declared
    range: a negative gradient clip norm, say, would otherwise flip the gradients without a word."""
    for f in fields(config):
        value, key = getattr(config, f.name), prefix + f.name
        if is_dataclass(value):
            check_ranges(value, key + ".")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            ge, gt, lt = _bounds(f)
            if (
                (ge is not None and value < ge)
                or (gt is not None and value <= gt)
                or (lt is not None and value >= lt)
            ):
                raise ConfigError(f"{key}: must be {range_text(f)}, got {value}")


@dataclass
class NetworkConfig:
    layers: dict[str, Any] = opt(
        factory=dict, help="RETURNN-style layer dict: name -> {class, from, n_out, activation, loss, ...}"
    )
    vars: dict[str, Any] = opt(
        factory=dict, help="free variables for the layer dict, used as ${network.vars.NAME} (e.g. lstm_dim)"
    )


@dataclass
class DatasetsConfig:
    root: str | None = opt(None, "corpus folder dataset configs read as ${dataset.root} (e.g. LibriSpeech)")
    train: dict[str, Any] | None = opt(None, "training dataset: {class: NAME, ...its options}")
    dev: dict[str, Any] | None = opt(None, "dev dataset, scored every epoch (its score steers LR control)")
    eval: dict[str, Any] | None = opt(None, "extra dataset scored every epoch and by task=eval")


@dataclass
class BatchingConfig:
    batch_size: int = opt(
        5000, "max padded frames per batch (max_len * num_seqs), RETURNN's batch_size", ge=1
    )
    max_seqs: int = opt(40, "max sequences per batch", ge=1)
    max_seq_length: int | None = opt(
        None, "drop training sequences longer than this (counted in the log)", ge=1
    )
    min_seq_length: int | None = opt(
        None, "drop training sequences shorter than this (counted in the log)", ge=0
    )
    chunking: str | None = opt(None, "'size:step': cut training sequences into overlapping chunks")
    eval_batch_size: int | None = opt(None, "batch_size for dev/eval/search (default: batch_size)", ge=1)
    num_workers: int = opt(
        0, "DataLoader worker processes for loading and features (0: in the main process)", ge=0
    )
    prefetch_factor: int = opt(2, "batches prefetched per worker", ge=1)


@dataclass
class OptimizerConfig:
    name: str = opt(MISSING, "torch optimizer: adam, adamw (fused kernel where torch has one), sgd")
    lr: float = opt(1e-3, "base learning rate (lr_control.learning_rate defaults to it)", ge=0)
    weight_decay: float = opt(0.0, "L2 penalty (decoupled for adamw)", ge=0)
    weight_decay_skip_bias_and_norm: bool = opt(
        True, "no weight decay on biases and norm scales (1-dim parameters), as RETURNN and fairseq"
    )


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    betas: list[float] = opt(factory=lambda: [0.9, 0.999], help="Adam beta1, beta2")
    eps: float = opt(1e-8, "Adam epsilon", gt=0)
    amsgrad: bool = opt(False, "use the AMSGrad variant")


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = opt(0.01, "decoupled weight decay", ge=0)


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    momentum: float = opt(0.0, "momentum factor", ge=0)
    nesterov: bool = opt(False, "Nesterov momentum (needs momentum > 0)")


@dataclass
class LRControlConfig:
    type: str = opt(
        "constant", "learning-rate control: constant, newbob, newbob_abs, newbob_multi_epoch, plateau"
    )
    learning_rate: float = opt("${optimizer.lr}", "initial learning rate (default: optimizer.lr)", ge=0)
    learning_rates: Any | None = opt(None, "per-epoch LRs applied first: a list (epoch 1..) or {epoch: lr}")
    min_learning_rate: float = opt(0.0, "a decay never takes the LR below this", ge=0)
    newbob_learning_rate_decay: float = opt(
        0.5, "newbob*: LR factor when the score did not improve enough", gt=0
    )
    newbob_learning_rate_growth: float = opt(
        1.0, "newbob*: factor applied when it does (1.0: keep the LR)", gt=0
    )
    newbob_relative_error_threshold: float = opt(
        -0.01, "newbob, newbob_multi_epoch: decay when the relative score change is above this"
    )
    newbob_relative_error_grow_threshold: float | None = opt(
        None, "newbob_multi_epoch: grow when the mean relative change is below this (default: the threshold)"
    )
    newbob_relative_error_div_by_old: bool = opt(
        False, "relative change = (new - old) / |old| instead of RETURNN's default / |new|"
    )
    newbob_error_threshold: float = opt(-0.01, "newbob_abs: decay when new - old score is above this")
    newbob_multi_num_epochs: int = opt(5, "newbob_multi_epoch: average the relative change over N epochs")
    newbob_multi_update_interval: int | None = opt(
        None, "newbob_multi_epoch: change the LR only every N epochs (default: newbob_multi_num_epochs)"
    )
    learning_rate_control_error_measure: Any | None = opt(
        None, "score key (or list of keys) that steers, e.g. dev_error_output (default: the dev score)"
    )
    learning_rate_control_relative_error_relative_lr: bool = opt(
        False, "divide the relative change by LR / learning_rate (expect smaller gains at smaller LRs)"
    )
    learning_rate_control_min_num_epochs_per_new_lr: int = opt(0, "keep a new LR for at least N epochs", ge=0)
    plateau_factor: float = opt(0.1, "plateau: torch ReduceLROnPlateau factor")
    plateau_patience: int = opt(10, "plateau: epochs without improvement before the LR is reduced", ge=0)
    plateau_threshold: float = opt(1e-4, "plateau: minimal change that counts as an improvement", ge=0)
    plateau_threshold_mode: str = opt("rel", "plateau: rel or abs")
    plateau_cooldown: int = opt(0, "plateau: epochs to wait after a reduction", ge=0)
    warmup_steps: int = opt(0, "per-step warmup over this many steps (0: none), times the epoch LR")
    warmup_mode: str = opt("linear", "warmup curve: linear or exponential")
    warmup_start_factor: float = opt(
        0.0, "warmup starts at this fraction of the LR (> 0 for exponential)", ge=0
    )
    step_decay: str = opt(
        "none", "per-step factor after warmup: none, inverse_sqrt (sqrt(warmup_steps/step)), noam, cosine"
    )
    step_decay_steps: int = opt(
        0, "cosine: steps after the warmup over which the factor falls from 1 to 0", ge=0
    )


@dataclass
class PretrainConfig:
    enabled: bool = opt(False, "grow the network layer-wise over the first epochs (RETURNN's pretrain)")
    construction_algo: str = opt(
        "from_output", "from_output, from_input, or a dotted path to fn(idx, net_dict) -> net_dict|None"
    )
    repetitions: Any = opt(1, "epochs per stage: an int, or a list (the last entry repeats)")
    copy_output_layer: bool = opt(True, "copy the output layer's parameters to the next stage (else re-init)")
    learning_rate: float | None = opt(
        None, "fixed LR in pretrain epochs (default: lr_control.learning_rate)", ge=0
    )
    use_learning_rate_control_always: bool = opt(
        False, "let lr_control set the LR in pretrain epochs too, instead of the fixed one"
    )


@dataclass
class CleanupConfig:
    enabled: bool = opt(False, "delete old checkpoints after each epoch (RETURNN's cleanup_old_models)")
    keep_last_n: int = opt(2, "always keep the checkpoints of the last N epochs")
    keep_best_n: int = opt(4, "keep the N best epochs by each score key selected by best_by")
    keep: list[int] | None = opt(
        None, "epochs always kept (default: RETURNN's pattern, e.g. 4, 8, ... and 5, 10, 20, ...)"
    )
    best_by: list[str] = opt(
        factory=lambda: ["dev_"], help="score-key prefixes whose best epochs are kept ('' = all, as RETURNN)"
    )
    best_link: bool = opt(True, "keep models/best.pt pointing at the best checkpoint by the control score")


@dataclass
class EngineConfig:
    num_epochs: int = opt(
        20, "train until this epoch (a partition_epoch sub-epoch counts as one epoch)", ge=1
    )
    device: str = opt("auto", "auto (cuda if available), cpu, cuda, cuda:N")
    torch_amp: str | None = opt(None, "autocast dtype: null, bfloat16, float16")
    seed: int = opt(42, "random seed for parameters, dropout and everything not tied to the epoch")
    gradient_clip_global_norm: float | None = opt(None, "clip the global gradient norm to this", gt=0)
    gradient_clip: float | None = opt(None, "clip each gradient value to [-x, x]", gt=0)
    gradient_noise: float = opt(
        0.0, "std of Gaussian noise added to the gradients (RETURNN's gradient_noise)", ge=0
    )
    stop_on_nonfinite_train_score: bool = opt(
        True, "a NaN/inf training loss stops the run (false: skip that update, log a warning, go on)"
    )
    accum_grad_multiple_step: int = opt(1, "accumulate gradients over this many steps per update", ge=1)
    save_interval: int = opt(1, "write a checkpoint every N epochs (the last epoch always)", ge=1)
    log_interval: int = opt(50, "steps between log lines when the progress bar is off", ge=1)
    progress_bar: bool | None = opt(None, "show a progress bar (default: when stdout is a terminal)")
    tensorboard: bool = opt(True, "write TensorBoard event files to <run dir>/tensorboard")
    num_threads: int | None = opt(None, "torch intra-op threads on CPU (default: torch's choice)", ge=1)
    keep_freed_memory: bool = opt(
        True,
        "glibc: keep freed memory in the heap for reuse instead of returning it to the OS, so each step's "
        "buffers are not page-faulted in again (faster on CPU; the process keeps its peak memory)",
    )


@dataclass
class DistributedConfig:
    backend: str = opt("auto", "torch.distributed backend under torchrun: auto (nccl on GPUs, gloo on CPUs)")
    timeout: int = opt(1800, "seconds a collective may wait for the other ranks", ge=1)
    find_unused_parameters: bool = opt(False, "DDP: allow parameters without gradient in a step")


@dataclass
class SearchConfig:
    dataset: str = opt("dev", "dataset to decode: train, dev or eval")
    output_layer: str = opt("output", "the layer with the label posteriors (a softmax trained with ctc)")
    decoder: str = opt("beam", "greedy (best path) or beam (CTC prefix beam search)")
    beam_size: int = opt(8, "beam: prefixes kept per frame", ge=1)
    nbest: int = opt(
        1, "beam: hypotheses per sequence in the JSON report (above 1: an `nbest` list with AM/LM scores)"
    )
    token_beam: int | None = opt(
        None, "beam: extend prefixes only by this many best labels per frame (null: all)", ge=1
    )
    length_bonus: float = opt(
        0.0,
        "beam: added per label (per word with lm_unit=word) to a hypothesis' score (counters the LM's "
        "bias to short)",
    )
    lm_run_dir: str | None = opt(
        None, "beam: run dir of an LM trained with seqtrain (label-level, same labels)"
    )
    lm_epoch: int | None = opt(None, "checkpoint epoch of the LM (default: its last)", ge=1)
    lm_output_layer: str = opt("output", "the LM's softmax layer")
    lm_weight: float = opt(0.0, "shallow fusion: score = log P_ctc + lm_weight * log P_lm (+ length bonus)")
    lm_unit: str = opt(
        "label", "label: the LM predicts the acoustic model's labels; word: a word LM, scored at word ends"
    )
    lm_oov_penalty: float = opt(
        0.0, "lm_unit=word: subtracted from the LM's log P(<unk>) for each word it does not know"
    )
    lm_look_ahead: bool = opt(
        True,
        "lm_unit=word: score partial words by the LM probability of the words they start (Hori et al. "
        "2018); false: only at word ends",
    )


@dataclass
class ForwardConfig:
    dataset: str = opt("dev", "dataset to run the network on: train, dev or eval")
    output_layer: str = opt("output", "the layer whose output is written")
    output: str = opt("output", "output (as the layer gives it), log_softmax (of its logits) or logits")
    output_file: str | None = opt(
        None, "HDF file (default: <run_dir>/forward/<dataset>.<layer>.epoch.NNN.hdf)"
    )


@dataclass
class PriorsConfig:
    dataset: str = opt("train", "dataset the posteriors are averaged over")
    output_layer: str = opt("output", "the softmax layer whose posteriors are averaged")
    output_file: str | None = opt(None, "text file (default: <run_dir>/priors/<layer>.epoch.NNN.txt)")


@dataclass
class TaskConfig:
    name: str = opt(
        "train",
        "train, eval, search, forward, compute_priors, dump, analyze, average_checkpoints, "
        "cleanup_old_models, initialize_model, nop_init_net_train, nop",
    )
    load_epoch: int | None = opt(None, "checkpoint epoch to load (eval etc.; default: the last one)", ge=0)
    load_file: str | None = opt(
        None,
        "checkpoint file to load instead of an epoch, relative to the model dir (averaged.pt, best.pt); "
        "outputs are then named by its stem",
    )
    eval_datasets: list[str] = opt(factory=lambda: ["dev", "eval"], help="datasets task=eval scores")
    dataset: str | None = opt(
        None, "the dataset a single-dataset task reads: train, dev, eval (default: dump train, analyze dev)"
    )
    output_file: str | None = opt(
        None, "task=dump: the HDF file to write (default: <run dir>/dump/<dataset>.hdf)"
    )
    average_num_best: int = opt(4, "average_checkpoints: average the N best epochs by the control score")
    average_epochs: list[int] | None = opt(
        None, "average_checkpoints: average these epochs instead of the N best"
    )
    average_output: str = opt("averaged.pt", "average_checkpoints: output file, relative to the model dir")
    analyze_histogram_bins: int = opt(20, "analyze: bins of the output-probability histograms over [0, 1]")
    search: SearchConfig = opt(factory=SearchConfig, help="task=search: dataset, decoder, beam, LM fusion")
    forward: ForwardConfig = opt(
        factory=ForwardConfig, help="task=forward: dataset, layer, output kind, file"
    )
    priors: PriorsConfig = opt(factory=PriorsConfig, help="task=compute_priors: dataset, layer, output file")


@dataclass
class Config:
    network: NetworkConfig = opt(factory=NetworkConfig, help="the model")
    dataset: DatasetsConfig = opt(factory=DatasetsConfig, help="train/dev/eval datasets")
    batching: BatchingConfig = opt(factory=BatchingConfig, help="how sequences become batches")
    optimizer: OptimizerConfig = opt(MISSING, "optimizer group: adam, adamw, sgd")
    lr_control: LRControlConfig = opt(factory=LRControlConfig, help="learning-rate control")
    pretrain: PretrainConfig = opt(factory=PretrainConfig, help="layer-wise pretraining")
    cleanup_old_models: CleanupConfig = opt(factory=CleanupConfig, help="checkpoint cleanup")
    engine: EngineConfig = opt(factory=EngineConfig, help="training loop")
    distributed: DistributedConfig = opt(factory=DistributedConfig, help="multi-process training (torchrun)")
    task: TaskConfig = opt(factory=TaskConfig, help="what to run")
    model_dir: str = opt("models", "checkpoint folder, relative to the run dir")


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore; each group YAML names its schema in its defaults list."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="network", name="network_schema", node=NetworkConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetsConfig)
    cs.store(group="optimizer", name="adam_schema", node=AdamConfig)
    cs.store(group="optimizer", name="adamw_schema", node=AdamWConfig)
    cs.store(group="optimizer", name="sgd_schema", node=SGDConfig)
    cs.store(group="lr_control", name="lr_control_schema", node=LRControlConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)
    cs.store(group="distributed", name="distributed_schema", node=DistributedConfig)

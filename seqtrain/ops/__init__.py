"""Native kernels (csrc/) for LSTM and CTC on CPU and CUDA, with pure-PyTorch fallbacks (same functions)."""

from seqtrain.ops.build import native_available
from seqtrain.ops.ctc import ctc_feasible, ctc_loss
from seqtrain.ops.lstm import LstmCall, group_runs_concurrently, lstm, lstm_bf16_available, lstm_group

__all__ = [
    "LstmCall",
    "ctc_feasible",
    "ctc_loss",
    "group_runs_concurrently",
    "lstm",
    "lstm_bf16_available",
    "lstm_group",
    "native_available",
]

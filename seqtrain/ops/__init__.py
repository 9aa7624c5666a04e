"""Native kernels (csrc/) for LSTM and CTC on CPU and CUDA, with pure-PyTorch fallbacks (same functions)."""

from seqtrain.ops.build import native_available
from seqtrain.ops.ctc import ctc_feasible, ctc_loss
from seqtrain.ops.lstm import lstm, lstm_bf16_available

__all__ = ["ctc_feasible", "ctc_loss", "lstm", "lstm_bf16_available", "native_available"]

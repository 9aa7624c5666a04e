"""seqtrain: train sequence neural networks with PyTorch and Hydra, the RETURNN way."""

__version__ = "0.1.0"

"""Datasets, registered by name (`class: task12ax`); importing this package registers them all."""

from seqtrain.registry import Registry

DATASETS = Registry("dataset")

from seqtrain.datasets import copy_task, generating, hdf, librispeech, lm, meta  # noqa: E402, F401  (register)
from seqtrain.datasets.base import Dataset, DatasetOptions, DataSpec, build_dataset  # noqa: E402

__all__ = ["DATASETS", "DataSpec", "Dataset", "DatasetOptions", "build_dataset"]

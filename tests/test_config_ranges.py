"""Declared ranges of numeric options (config.opt ge/gt) and their check at start-up."""

from dataclasses import dataclass

import pytest

from seqtrain.config import check_ranges, opt
from seqtrain.errors import ConfigError
from tests.conftest import compose


@dataclass
class Inner:
    steps: int = opt(1, "at least one", ge=1)
    scale: float | None = opt(None, "above zero", gt=0)


@dataclass
class Outer:
    inner: Inner = opt(factory=Inner)
    free: float = opt(-5.0, "no range")
    flag: bool = opt(False, "booleans are not numbers here", ge=1)


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        (Inner(steps=1, scale=1e-9), None),  # the bounds themselves: ge admits it, gt needs more
        (Inner(steps=0), "inner.steps: must be >= 1, got 0"),
        (Inner(scale=0.0), "inner.scale: must be > 0, got 0.0"),
        (Inner(scale=-2), "inner.scale: must be > 0, got -2"),
        (Inner(scale=None), None),  # unset optional numbers are not checked
    ],
)
def test_check_ranges_names_the_full_key(inner, message):
    config = Outer(inner=inner)
    if message is None:
        check_ranges(config)
    else:
        with pytest.raises(ConfigError, match=f"^{message}$"):
            check_ranges(config)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["+experiment=fsdd"],
        ["+experiment=tts"],
        ["+experiment=librispeech"],
        ["+experiment=ptb"],
        ["+experiment=char_lm_ptb"],
        ["+experiment=tinyshakespeare"],
        ["network=blstm", "dataset=librispeech", "lr_control=newbob_multi_epoch"],
    ],
)
def test_shipped_presets_are_within_the_declared_ranges(overrides):
    check_ranges(compose(*overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["network.layers.lstm.n_out=-3"], "network.layers.lstm.n_out: must be >= 1, got -3"),
        (["+network.layers.lstm.dropout=1.0"], "network.layers.lstm.dropout: must be >= 0 and < 1, got 1.0"),
        (["dataset.train.num_seqs=0"], "dataset.train.num_seqs: must be >= 1, got 0"),
    ],
)
def test_layer_and_dataset_options_are_range_checked_when_built(overrides, message, tmp_path):
    """Layer and dataset options are checked where their registries parse them, with the same full key."""
    from seqtrain.app import Experiment

    exp = Experiment(compose(*overrides), tmp_path)
    with pytest.raises(ConfigError, match=f"^{message}$"):
        exp.build_network(exp.cfg.network.layers)  # builds the datasets first, for the data's dims

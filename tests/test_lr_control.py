"""LR control: hand-worked Newbob sequences, per-step factors, the learning_rates file, and RETURNN itself."""

from __future__ import annotations

import io
import math
import random
from contextlib import redirect_stdout

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from seqtrain.config import LRControlConfig, register_configs
from seqtrain.errors import ConfigError, DataError
from seqtrain.lr_control import build_lr_control
from seqtrain.lr_file import EpochData, format_learning_rates, parse_learning_rates


def make(type_: str = "newbob", **kwargs):
    return build_lr_control(
        LRControlConfig(type=type_, learning_rate=kwargs.pop("learning_rate", 1.0), **kwargs)
    )


def run(control, dev_scores: list[float], key: str = "dev_score_output") -> list[float]:
    """LRs of epochs 1..len+1 when epoch i ends with dev score dev_scores[i-1]."""
    lrs = []
    for epoch, score in enumerate(dev_scores, 1):
        lrs.append(control.learning_rate(epoch))
        control.set_epoch_scores(epoch, {"train_score_output": score + 1.0, key: score})
    return [*lrs, control.learning_rate(len(dev_scores) + 1)]


# --- Newbob variants, worked by hand ---


def test_newbob_halves_when_improvement_below_one_percent():
    # (3.24 - 3.25) / 3.24 = -0.0031 > -0.01: decay
    assert run(make(), [3.25, 3.24]) == [1.0, 1.0, 0.5]


def test_newbob_keeps_lr_while_improving():
    # (3.20 - 3.30) / 3.20 = -0.031 <= -0.01: keep (growth 1.0)
    assert run(make(), [3.30, 3.20]) == [1.0, 1.0, 1.0]


def test_newbob_decays_when_worse_and_stops_at_min_learning_rate():
    lrs = run(make(min_learning_rate=0.3), [3.0, 3.1, 3.2, 3.3])
    assert lrs == [1.0, 1.0, 0.5, 0.3, 0.3]


def test_newbob_growth_and_div_by_old():
    # 1.0 -> 0.9 with threshold -0.105: / new = -0.111 grows by 1.5; / old = -0.1 decays
    opts = dict(newbob_learning_rate_growth=1.5, newbob_relative_error_threshold=-0.105)
    assert run(make(**opts), [1.0, 0.9])[-1] == 1.5
    assert run(make(**opts, newbob_relative_error_div_by_old=True), [1.0, 0.9])[-1] == 0.5


def test_newbob_relative_to_lr():
    scores = [10.0, 9.95, 9.9]
    # epoch 3 (after -0.005) decays to 0.5; epoch 4: -0.05 / 9.9 = -0.00505, / LR 0.5 -> -0.0101: keep
    assert run(make(learning_rate_control_relative_error_relative_lr=True), scores) == [1.0, 1.0, 0.5, 0.5]
    assert run(make(), scores) == [1.0, 1.0, 0.5, 0.25]


def test_newbob_min_epochs_per_new_lr():
    worse = [10.0, 10.1, 10.2, 10.3, 10.4, 10.5]
    lrs = run(make(learning_rate_control_min_num_epochs_per_new_lr=3), worse)
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_newbob_abs():
    assert run(make("newbob_abs"), [3.0, 2.995]) == [1.0, 1.0, 0.5]  # -0.005 > -0.01: decay
    assert run(make("newbob_abs"), [3.0, 2.9]) == [1.0, 1.0, 1.0]  # improves enough
    assert run(make("newbob_abs"), [3.0, 3.1]) == [1.0, 1.0, 0.5]  # worse
    assert run(make("newbob_abs", newbob_error_threshold=0.2), [3.0, 3.1]) == [1.0, 1.0, 1.0]


def test_newbob_multi_epoch():
    # relative changes: e2 -1/9 = -0.111, e3 -0.05/8.95 = -0.0056, e4 -0.01/8.94 = -0.0011, e5 -0.1175
    scores = [10.0, 9.0, 8.95, 8.94, 8.0]
    # epoch 5 averages e3, e4 (> -0.01): decay; epoch 6 averages e4, e5: keep
    cfg = dict(newbob_multi_num_epochs=2, newbob_multi_update_interval=1)
    assert run(make("newbob_multi_epoch", **cfg), scores) == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    # checked only in epochs 1, 4, 7, ...: epoch 4 averages e2, e3 (-0.058): keep; epoch 5 is not checked
    cfg["newbob_multi_update_interval"] = 3
    assert run(make("newbob_multi_epoch", **cfg), scores) == [1.0] * 6


def test_constant_with_preset_learning_rates():
    # RETURNN ConstantLearningRate: after the list, the last listed LR stays
    assert run(make("constant", learning_rates=[0.1, 0.2]), [5.0, 4.0, 3.0]) == [0.1, 0.2, 0.2, 0.2]
    assert run(make("constant", learning_rates={2: 0.5}), [5.0, 4.0]) == [1.0, 0.5, 0.5]
    assert run(make("constant", learning_rates="[0.1, 0.2]"), [5.0])[:2] == [0.1, 0.2]


def test_newbob_takes_over_after_preset():
    # warmup 0.1, 0.2, 0.3; epoch 4 compares epochs 2 and 3: -0.01/3.24 -> decay from the last LR, 0.3
    assert run(make(learning_rates=[0.1, 0.2, 0.3]), [3.5, 3.25, 3.24]) == [0.1, 0.2, 0.3, 0.15]


def test_plateau_matches_torch_reduce_lr_on_plateau():
    scores = [5.0, 4.0, 4.0, 4.0, 3.9, 3.9, 3.9, 3.9, 3.0, 3.0, 3.0]
    control = make(
        "plateau", plateau_factor=0.5, plateau_patience=1, plateau_cooldown=1, min_learning_rate=0.1
    )
    lrs = run(control, scores)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=1, cooldown=1, min_lr=0.1
    )
    expected = [1.0]
    for score in scores:
        scheduler.step(score)
        expected.append(optimizer.param_groups[0]["lr"])
    assert lrs == expected
    assert min(lrs) < 1.0


# --- which score steers ---


def test_error_key_follows_returnn():
    control = make()
    assert control.error_key() is None
    control.set_epoch_scores(1, {"train_score_output": 1.0, "dev_error_output": 0.3, "dev_score_output": 2.0})
    assert control.error_key() == "dev_score_output"
    assert (
        make(learning_rate_control_error_measure="dev_error").error_key() == "dev_error"
    )  # before any scores
    control.error_measure = "dev_error"
    assert control.error_key() == "dev_error_output"
    control.set_epoch_scores(2, {"train_score_output": 1.0})
    assert control.error_key() == "train_score_output"  # no dev data in that epoch


def test_error_measure_steers_newbob():
    control = make(learning_rate_control_error_measure=["dev_error_output"])
    for epoch, (score, error) in enumerate([(3.0, 0.30), (2.0, 0.299)], 1):
        control.learning_rate(epoch)
        control.set_epoch_scores(epoch, {"dev_score_output": score, "dev_error_output": error})
    assert control.learning_rate(3) == 0.5  # the error barely moved; the score would have kept the LR


# --- per-step factors ---


def test_linear_warmup_composes_with_epoch_lr():
    control = make(warmup_steps=4)
    assert [control.step_factor(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    control = make(warmup_steps=4, warmup_start_factor=0.2)
    assert control.step_factor(1) == pytest.approx(0.2 + 0.8 * 0.5)


def test_exponential_warmup():
    control = make(warmup_steps=4, warmup_mode="exponential", warmup_start_factor=0.01)
    assert [control.step_factor(s) for s in range(4)] == pytest.approx([0.01**0.75, 0.1, 0.01**0.25, 1.0])


def test_noam_and_inverse_sqrt():
    control = make(warmup_steps=4, step_decay="noam")
    steps = [1, 2, 4, 16, 100]  # 1-based
    noam = [min(s / 4, (4 / s) ** 0.5) for s in steps]
    assert [control.step_factor(s - 1) for s in steps] == pytest.approx(noam)
    control = make(warmup_steps=4, step_decay="inverse_sqrt")
    assert control.step_factor(15) == pytest.approx(0.5)
    assert make(step_decay="inverse_sqrt").step_factor(3) == pytest.approx(0.5)  # no warmup: 1/sqrt(step)
    assert make().step_factor(123) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(type_="nope"),
        dict(warmup_mode="cosine"),
        dict(step_decay="cosine"),
        dict(step_decay="noam"),
        dict(warmup_steps=10, warmup_mode="exponential"),
        dict(learning_rate="${optimizer.lr}"),
        dict(learning_rates="[0.1,"),
        dict(type_="newbob_multi_epoch", newbob_relative_error_grow_threshold=0.1),
        dict(type_="plateau", plateau_threshold_mode="relative"),
    ],
)
def test_config_errors_name_the_key(kwargs):
    with pytest.raises(ConfigError, match="lr_control"):
        make(**kwargs)


# --- checkpoint state and the learning_rates file ---


def test_state_dict_survives_weights_only_load_and_resumes_identically(tmp_path):
    scores = [3.0, 2.9, 2.89, 2.95, 2.8, 2.79]
    full = run(make("newbob_multi_epoch", newbob_multi_num_epochs=2), scores)
    first = make("newbob_multi_epoch", newbob_multi_num_epochs=2)
    run(first, scores[:3])
    first.set_epoch_meta(3, {"global_train_step": 30})
    torch.save({"lr_control": first.state_dict()}, tmp_path / "ck.pt")
    resumed = make("newbob_multi_epoch", newbob_multi_num_epochs=2)
    resumed.load_state_dict(torch.load(tmp_path / "ck.pt", weights_only=True)["lr_control"])
    assert resumed.epoch_data[3].meta == {"global_train_step": 30}
    lrs = [resumed.learning_rate(e) for e in range(1, 4)]
    for epoch, score in enumerate(scores[3:], 4):
        lrs.append(resumed.learning_rate(epoch))
        resumed.set_epoch_scores(epoch, {"train_score_output": score + 1.0, "dev_score_output": score})
    assert [*lrs, resumed.learning_rate(7)] == full


def test_save_is_atomic_and_load_restores(tmp_path):
    control = make()
    run(control, [3.25, 3.24])
    control.set_epoch_meta(2, {"global_train_step": 200, "hostname": "h"})
    path = tmp_path / "run" / "learning_rates"
    control.save(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["learning_rates"]
    again = make(learning_rates=[0.1, 0.1, 0.1, 0.1])
    again.load(path)
    assert again.epoch_data[2] == control.epoch_data[2]
    assert [again.learning_rate(e) for e in (3, 4)] == [0.5, 0.1]  # the file wins; the preset fills the gaps


RETURNN_FILE = """{
1: EpochData(learningRate=0.001, error={
':meta:effective_learning_rate': 0.001,
':meta:global_train_step': 120,
'dev_error_output': 0.25,
'dev_score_output': 3.25,
'train_score_output': float('nan'),
}),
2: EpochData(learningRate=0.001, error={'dev_score_output': np.float64(3.24), 'x': inf}),
3: EpochData(learningRate=0.0005, error=2.5),
4: EpochData(learningRate=0.0005, error={}),
}
"""


def test_parse_returnn_format():
    data = parse_learning_rates(RETURNN_FILE)
    assert data[1].learning_rate == 0.001
    assert data[1].meta == {"effective_learning_rate": 0.001, "global_train_step": 120}
    assert data[1].error["dev_error_output"] == 0.25 and math.isnan(data[1].error["train_score_output"])
    assert data[2].error == {"dev_score_output": 3.24, "x": math.inf}
    assert data[3].error == {"old_format_score": 2.5}
    assert data[4] == EpochData(0.0005)


def test_format_is_returnn_better_repr():
    data = {
        2: EpochData(0.5, {"dev_score_output": 1.0}),
        1: EpochData(1.0, {"b": math.nan, "a": 2.0}, {"s": 3}),
    }
    text = format_learning_rates(data)
    assert text == (
        "{\n1: EpochData(learningRate=1.0, error={':meta:s': 3, 'a': 2.0, 'b': float('nan')}),\n"
        "2: EpochData(learningRate=0.5, error={'dev_score_output': 1.0}),\n}\n"
    )
    assert format_learning_rates(parse_learning_rates(text)) == text


@pytest.mark.parametrize(
    "text", ["{1: EpochData(learningRate=0.1", "{1: __import__('os')}", "[1, 2]", "{1: 2}"]
)
def test_broken_file_is_a_data_error(text):
    with pytest.raises(DataError, match="learning_rates"):
        parse_learning_rates(text)


# --- Hydra conf group ---


@pytest.mark.parametrize(
    "name",
    ["constant", "newbob", "newbob_abs", "newbob_multi_epoch", "plateau", "warmup", "noam", "inverse_sqrt"],
)
def test_conf_group_composes(name):
    register_configs()
    with initialize_config_module("seqtrain.conf", version_base=None):
        cfg = compose("config", overrides=[f"lr_control={name}"])
        default = compose("config")
    control = build_lr_control(cfg.lr_control)
    assert control.learning_rate(1) == cfg.optimizer.lr
    assert OmegaConf.to_object(default.lr_control).type == "constant"


# --- against RETURNN itself ---


def _returnn_control(returnn_config: dict):
    lrc = pytest.importorskip("returnn.learning_rate_control")
    from returnn.config import Config
    from returnn.log import log

    if not log.v:  # RETURNN prints through its log; give it silent streams
        log.initialize(verbosity=[0])
    with redirect_stdout(io.StringIO()):
        return lrc.load_learning_rate_control_from_config(Config(returnn_config))


def _random_options(rng: random.Random, type_: str) -> dict:
    return {
        "learning_rate_control": type_,
        "learning_rate": rng.choice([1.0, 0.001]),
        "min_learning_rate": rng.choice([0.0, 0.0001]),
        "newbob_learning_rate_decay": rng.choice([0.5, 0.7]),
        "newbob_learning_rate_growth": rng.choice([1.0, 1.1]),
        "newbob_relative_error_threshold": rng.choice([-0.01, 0.0]),
        "newbob_relative_error_div_by_old": rng.random() < 0.5,
        "newbob_error_threshold": rng.choice([-0.01, 0.0]),
        "newbob_multi_num_epochs": rng.choice([1, 3]),
        "newbob_multi_update_interval": rng.choice([1, 2]),
        "learning_rate_control_relative_error_relative_lr": rng.random() < 0.5,
        "learning_rate_control_min_num_epochs_per_new_lr": rng.choice([0, 3]),
        "learning_rate_control_error_measure": rng.choice([None, "dev_error", "train_score"]),
    }


@pytest.mark.parametrize("type_", ["constant", "newbob", "newbob_abs", "newbob_multi_epoch"])
def test_same_lrs_as_returnn_on_random_scores(type_):
    rng = random.Random(type_)
    for _ in range(20):
        options = _random_options(rng, type_)
        theirs = _returnn_control(options)
        ours = make(type_, **{k: v for k, v in options.items() if k != "learning_rate_control"})
        score = 5.0
        for epoch in range(1, 30):
            assert ours.learning_rate(epoch) == theirs.get_learning_rate_for_epoch(epoch), (epoch, options)
            score *= rng.uniform(0.97, 1.01)
            scores = {
                "train_score_output": 1.1 * score,
                "dev_score_output": score,
                "dev_error_output": score / 9,
            }
            ours.set_epoch_scores(epoch, scores)
            theirs.set_epoch_error(epoch, dict(scores))
        assert ours.error_key() == theirs.get_error_key(epoch)


def test_returnn_reads_our_file_and_we_read_its(tmp_path):
    ours = make(learning_rate=0.001)
    run(ours, [3.25, 3.24, math.nan])
    ours.set_epoch_meta(2, {"global_train_step": 200, "device": "cpu"})
    ours.save(tmp_path / "ours")
    theirs = _returnn_control(
        {
            "learning_rate_control": "newbob",
            "learning_rate": 0.001,
            "learning_rate_file": str(tmp_path / "ours"),
        }
    )
    assert sorted(theirs.epoch_data) == [1, 2, 3, 4]
    for epoch, data in ours.epoch_data.items():
        assert theirs.epoch_data[epoch].learning_rate == data.learning_rate
        assert theirs.epoch_data[epoch].meta == data.meta
        assert repr(sorted(theirs.epoch_data[epoch].error.items())) == repr(sorted(data.error.items()))
    theirs.filename = str(tmp_path / "theirs")
    theirs.save()
    assert (tmp_path / "theirs").read_text() == (tmp_path / "ours").read_text()


def test_cosine_step_decay_by_hand():
    from seqtrain.config import LRControlConfig
    from seqtrain.lr_control import StepSchedule

    schedule = StepSchedule(
        LRControlConfig(learning_rate=1.0, warmup_steps=10, step_decay="cosine", step_decay_steps=100)
    )
    assert schedule.factor(4) == pytest.approx(0.5)  # step 5 of a linear warmup over 10 from 0
    assert schedule.factor(9) == pytest.approx(1.0)
    assert schedule.factor(59) == pytest.approx(0.5)  # half way: cos(pi/2) -> 0.5
    assert schedule.factor(84) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert schedule.factor(500) == pytest.approx(0.0)

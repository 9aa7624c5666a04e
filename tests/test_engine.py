import pytest
import torch

from seqtrain.app import Experiment
from seqtrain.errors import TrainingError
from tests.conftest import compose

SMALL = [
    "dataset.train.num_seqs=60",
    "dataset.dev.num_seqs=20",
    "dataset.train.seq_ordering=random",
    "batching.max_seqs=8",
    "engine.tensorboard=false",
    "engine.progress_bar=false",
]
BLSTM = ["network=blstm_framewise", "network.vars.lstm_dim=8", "network.vars.dropout=0.2"]


def train(run_dir, *overrides):
    exp = Experiment(compose(*SMALL, *overrides), run_dir)
    exp.engine.train()
    return exp


def test_resume_gives_identical_parameters(tmp_path):
    straight = train(tmp_path / "a", *BLSTM, "engine.num_epochs=4")
    train(tmp_path / "b", *BLSTM, "engine.num_epochs=2")
    resumed = train(tmp_path / "b", *BLSTM, "engine.num_epochs=4")
    assert resumed.engine.epoch == 4 and resumed.engine.global_step == straight.engine.global_step
    a, b = straight.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "b" / "learning_rates").read_text() == (tmp_path / "a" / "learning_rates").read_text()


def test_training_learns_and_checkpoints(tmp_path):
    exp = train(
        tmp_path,
        "engine.num_epochs=3",
        "dataset.train.num_seqs=200",
        "engine.save_interval=2",
        "engine.gradient_clip_global_norm=1.0",
        "engine.accum_grad_multiple_step=2",
    )
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["best.pt", "epoch.002.pt", "epoch.003.pt"]
    dev = {e: d.error["dev_score_output"] for e, d in exp.engine.lr_control.epoch_data.items() if e in (2, 3)}
    best = min(dev, key=dev.get)
    assert (models / "best.pt").resolve() == (models / f"epoch.{best:03d}.pt").resolve()
    scores = exp.engine.score("dev")
    assert set(scores) == {"dev_score_output", "dev_error_output"}
    assert scores["dev_error_output"] < 0.139  # below always predicting the majority class L


def test_nonfinite_loss_names_step_and_sequences(tmp_path):
    exp = Experiment(compose(*SMALL, *BLSTM, "engine.num_epochs=1"), tmp_path)
    with torch.no_grad():
        exp.network.layers["output"].linear.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"epoch 1 step 0 .*loss is nan .*sequences: seq-"):
        exp.engine.train()
    assert not (tmp_path / "models").exists()


def test_pretraining_grows_the_network_and_resumes(tmp_path):
    deep = [
        "network=mlp",
        "network.vars.hidden_dim=16",
        "pretrain.enabled=true",
        "cleanup_old_models.best_link=false",
    ]
    exp = train(tmp_path / "a", *deep, "engine.num_epochs=3")
    assert list(exp.network.layers) == ["hidden1", "hidden2", "output"]
    assert sorted(exp.engine.lr_control.epoch_data) == [1, 2, 3]
    stage1 = torch.load(tmp_path / "a" / "models" / "epoch.001.pt", weights_only=True)["model"]
    assert {k.split(".")[1] for k in stage1} == {"hidden1", "output"}  # stage 1: {hidden1} + output
    train(tmp_path / "b", *deep, "engine.num_epochs=1")
    resumed = train(tmp_path / "b", *deep, "engine.num_epochs=3")
    a, b = exp.network.state_dict(), resumed.network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_clipping_by_value_and_norm(tmp_path):
    exp = Experiment(
        compose(
            *SMALL,
            "optimizer=sgd",
            "optimizer.lr=1.0",
            "engine.gradient_clip=0.5",
            "engine.gradient_clip_global_norm=1.0",
        ),
        tmp_path,
    )
    engine = exp.engine
    params = list(engine.network.parameters())
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.full_like(p, 3.0)
    norm = engine.update()
    clipped = torch.cat([torch.full_like(p, 0.5).flatten() for p in params])  # value clip first: 3 -> 0.5
    assert norm == pytest.approx(float(clipped.norm()), rel=1e-5)  # the norm before norm clipping
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, params)])
    torch.testing.assert_close(step, clipped / clipped.norm())  # SGD lr 1: the step is the clipped gradient


def test_nonfinite_loss_can_be_skipped(tmp_path, caplog):
    exp = Experiment(
        compose(*SMALL, "engine.num_epochs=1", "engine.stop_on_nonfinite_train_score=false"), tmp_path
    )
    with torch.no_grad():
        exp.network.layers["output"].linear.bias.fill_(float("nan"))
    exp.engine.train()
    assert "update skipped" in caplog.text and exp.engine.global_step == 0


def test_bfloat16_autocast_trains(tmp_path):
    exp = train(tmp_path, "engine.num_epochs=1", "engine.torch_amp=bfloat16")
    scores = exp.engine.lr_control.epoch_data[1].error
    assert 0 < scores["train_score_output"] < 1.0 and scores["dev_error_output"] <= 1


def test_gradient_noise_has_the_configured_std(tmp_path):
    exp = Experiment(
        compose(*SMALL, "optimizer=sgd", "optimizer.lr=1.0", "engine.gradient_noise=0.1"), tmp_path
    )
    params = list(exp.engine.network.parameters())
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    exp.engine.update()
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, params)])
    assert step.numel() > 5000 and abs(float(step.std()) - 0.1) < 0.005 and abs(float(step.mean())) < 0.005

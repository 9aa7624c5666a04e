import pytest
import torch

from seqtrain.app import Experiment
from seqtrain.errors import TrainingError
from tests.conftest import compose

SMALL = ["dataset.train.num_seqs=60", "dataset.dev.num_seqs=20", "dataset.train.seq_ordering=random",
         "batching.max_seqs=8", "engine.tensorboard=false", "engine.progress_bar=false"]
BLSTM = ["network=blstm", "network.vars.lstm_dim=8", "network.vars.dropout=0.2"]


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
    exp = train(tmp_path, "engine.num_epochs=3", "dataset.train.num_seqs=200",
                "engine.save_interval=2", "engine.gradient_clip_global_norm=1.0", "engine.accum_grad_multiple_step=2")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["epoch.002.pt", "epoch.003.pt"]
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

import torch

from seqtrain.tensor import Dim, Tensor


def make(raw, lens):
    time = Dim("time", seq_lens=torch.tensor(lens))
    return Tensor(raw, (Dim("batch", size=raw.shape[0]), time, Dim("feature", size=raw.shape[2])))


def test_mask_marks_real_frames():
    x = make(torch.zeros(3, 4, 2), [4, 1, 2])
    expected = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(x.mask(), expected)
    assert int(x.num_frames()) == 7


def test_reductions_over_time_ignore_padding():
    raw = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [100.0], [-100.0]]])
    x = make(raw, [3, 1])
    assert x.reduce(x.time_dim, "sum").raw.flatten().tolist() == [6.0, 4.0]
    assert x.reduce(x.time_dim, "mean").raw.flatten().tolist() == [2.0, 4.0]
    assert x.reduce(x.time_dim, "max").raw.flatten().tolist() == [3.0, 4.0]
    assert x.reduce(x.time_dim, "min").raw.flatten().tolist() == [1.0, 4.0]


def test_zero_padding_and_dims():
    x = make(torch.ones(2, 3, 2), [3, 2])
    z = x.zero_padding()
    assert z.raw[1, 2].tolist() == [0.0, 0.0] and z.raw[1, 1].tolist() == [1.0, 1.0]
    assert x.time_dim is x.dims[1] and x.feature_dim.size == 2 and x.dim_size == 2
    assert torch.equal(x.transpose([x.dims[1], x.dims[0], x.dims[2]]), x.raw.transpose(0, 1))


def test_sparse_tensor_has_no_feature_dim():
    time = Dim("time", seq_lens=torch.tensor([2]))
    x = Tensor(torch.zeros(1, 2, dtype=torch.long), (Dim("batch", size=1), time), sparse_dim=Dim("v", size=5))
    assert x.feature_dim is None and x.dim_size == 5

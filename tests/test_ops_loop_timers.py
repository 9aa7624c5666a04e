"""The opt-in phase timers of the fused CPU time loops (csrc/loop_timers.h; benchmarks/lstm_phases.py)."""

import time

import pytest
import torch

from seqtrain import ops
from seqtrain.ops import build
from tests.ops_helpers import need

PHASES = {"fwd_pack_w", "fwd_gemm", "fwd_cells", "fwd_pack_a", "fwd_barrier",
          "bwd_pack_w", "bwd_cells", "bwd_pack_a", "bwd_barrier", "bwd_gemm"}  # fmt: skip


def test_the_default_build_has_no_timers():
    need("native")
    assert build.native_module().lstm_loop_phases() == {}


@pytest.fixture(scope="module")
def timers_module():
    need("native")
    return build.loop_timers_module()


def test_timed_loops_book_every_phase_within_the_call(monkeypatch, timers_module):
    monkeypatch.setattr(build, "native_module", lambda: timers_module)
    T, B, n_in, H = 30, 32, 8, 64  # B = 32, H a multiple of 32: the fused loops run (AVX2 builds too)
    w_ih, w_hh, bias = torch.randn(4 * H, n_in) / 8, torch.randn(4 * H, H) / 8, torch.zeros(4 * H)
    x = torch.randn(T, B, n_in, requires_grad=True)
    timers_module.lstm_loop_phases(reset=True)
    start = time.perf_counter()
    y, _ = ops.lstm(x, w_ih, w_hh, bias, torch.full((B,), T), impl="native")
    y.sum().backward()
    wall = time.perf_counter() - start
    phases = timers_module.lstm_loop_phases(reset=True)
    assert set(phases) == PHASES
    assert all(s > 0 for s in phases.values()), phases
    assert sum(phases.values()) <= wall * torch.get_num_threads()  # summed over the loops' threads
    assert all(s == 0 for s in timers_module.lstm_loop_phases().values())  # the reset cleared them

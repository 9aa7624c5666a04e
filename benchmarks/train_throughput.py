"""BLSTM-CTC training throughput: seqtrain's Network (rec layers, ctc loss, total_loss) and the Engine's
optimizer (seqtrain.optim: torch's fused Adam) against a minimal plain-PyTorch loop (nn.LSTM on packed
sequences + Linear + F.ctc_loss + Adam), on the same padded batches, measured alternately in one process.
Data loading is left out of both.

Variants: seqtrain with unit standardlstm, with unit nativelstm, and both sides under bf16 autocast.
Usage: PYTHONPATH=. python benchmarks/train_throughput.py [--steps 3] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

import seqtrain.layers.ctc  # noqa: F401  (registers the loss)
from seqtrain import memory, ops
from seqtrain.config import AdamConfig
from seqtrain.datasets.base import DataSpec
from seqtrain.network import Network
from seqtrain.ops import build
from seqtrain.optim import build_optimizer
from seqtrain.tensor import Dim, Tensor

FEATURES, CLASSES = 40, 30  # 29 labels + blank (last)


def make_batch(frames: int, seq_len: int, device) -> dict:
    """~`frames` padded frames of sequences with lengths in [0.9, 1] * seq_len, ~seq_len / 8 labels each."""
    num = max(frames // seq_len, 1)
    lens = torch.randint(int(0.9 * seq_len), seq_len + 1, (num,))
    lens[0] = seq_len
    tgt_lens = (lens // 8).clamp_min(1)
    x = torch.randn(num, seq_len, FEATURES)
    labels = torch.randint(0, CLASSES - 1, (num, int(tgt_lens.max())))
    return {"x": x.to(device), "lens": lens, "labels": labels.to(device), "tgt_lens": tgt_lens}


def seqtrain_data(batch: dict, device) -> dict[str, Tensor]:
    bdim = Dim("batch", size=batch["x"].shape[0])
    time_dim = Dim("time:data", seq_lens=batch["lens"].to(device))
    labels = Dim("time:classes", seq_lens=batch["tgt_lens"].to(device))
    return {
        "data": Tensor(batch["x"], (bdim, time_dim, Dim("feature:data", FEATURES))),
        "classes": Tensor(batch["labels"], (bdim, labels), Dim("vocab:classes", CLASSES - 1)),
    }


def seqtrain_model(unit: str, dim: int, layers: int) -> Network:
    net, prev = {}, "data"
    for i in range(1, layers + 1):
        for name, direction in (("fw", 1), ("bw", -1)):
            net[f"lstm{i}_{name}"] = {"class": "rec", "unit": unit, "n_out": dim, "direction": direction}
            net[f"lstm{i}_{name}"]["from"] = prev
        prev = [f"lstm{i}_fw", f"lstm{i}_bw"]
    net["output"] = {
        "class": "softmax",
        "from": prev,
        "n_out": CLASSES,
        "loss": "ctc",
        "loss_opts": {"errors": False},
    }
    specs = {"data": DataSpec(FEATURES), "classes": DataSpec(CLASSES - 1, sparse=True)}
    return Network(net, specs)


class PlainModel(nn.Module):
    """pack: nn.LSTM on packed sequences (exact on padded batches). Without packing, the backward direction
    also reads the padding (a throughput proxy only): torch's packed path is very slow on CPU."""

    def __init__(self, dim: int, layers: int, pack: bool = True):
        super().__init__()
        self.pack = pack
        self.lstm = nn.LSTM(FEATURES, dim, num_layers=layers, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * dim, CLASSES)

    def loss(self, batch: dict) -> torch.Tensor:
        if self.pack:
            packed = nn.utils.rnn.pack_padded_sequence(
                batch["x"], batch["lens"], batch_first=True, enforce_sorted=False
            )
            y, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        else:
            y, _ = self.lstm(batch["x"])
        log_probs = self.out(y).float().log_softmax(-1).transpose(0, 1)
        return F.ctc_loss(
            log_probs, batch["labels"], batch["lens"], batch["tgt_lens"], blank=CLASSES - 1, reduction="sum"
        )


def seqtrain_step(network: Network, opt, batch: dict, device, amp) -> None:
    data = seqtrain_data(batch, device)
    with amp():
        outputs = network(data)
        total = network.total_loss(network.losses(outputs, data))
    total.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), float("inf"))  # as Engine.update
    opt.step()
    opt.zero_grad(set_to_none=True)


def plain_step(model: PlainModel, opt, batch: dict, device, amp) -> None:
    with amp():
        loss = model.loss(batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_variant(unit: str, bf16: bool, args, device):
    """Median frames/s of each side, the median and range of the per-round speed ratios (seqtrain / plain),
    and a note when the plain side could not run under bf16 autocast."""
    torch.manual_seed(0)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    ours = seqtrain_model(unit, args.dim, args.layers).to(device).train()
    plain = PlainModel(args.dim, args.layers, args.pack).to(device).train()
    sides = {
        "seqtrain": [seqtrain_step, ours, build_optimizer(AdamConfig(lr=1e-3), ours.parameters()), amp],
        "plain": [plain_step, plain, torch.optim.Adam(plain.parameters(), 1e-3), amp],
    }
    batches = [make_batch(args.batch_frames, args.seq_len, device) for _ in range(args.steps)]
    frames = sum(int(b["lens"].sum()) for b in batches)
    note = ""
    try:
        plain_step(plain, sides["plain"][2], batches[0], device, amp)
    except RuntimeError as exc:  # torch's CPU LSTM has no bf16 oneDNN primitive without AVX-512 bf16
        sides["plain"][3] = nullcontext
        note = f"plain side in fp32 (under bf16 autocast: {str(exc).splitlines()[0][:60]})"
    times = {name: [] for name in sides}
    for rep in range(args.rounds + 1):  # round 0 warms up (kernel build, allocator, autotuning)
        order = list(sides) if rep % 2 else list(sides)[::-1]  # who goes first alternates
        for name in order:
            step, model, opt, side_amp = sides[name]
            sync(device)
            start = time.perf_counter()
            for batch in batches[: 1 if rep == 0 else None]:
                step(model, opt, batch, device, side_amp)
            sync(device)
            if rep:
                times[name].append(time.perf_counter() - start)
    # The ratio of each round's two times, adjacent in time, cancels the drift of a shared machine's speed.
    ratios = [plain / ours for ours, plain in zip(times["seqtrain"], times["plain"])]
    fps = {name: frames / statistics.median(t) for name, t in times.items()}
    return fps, statistics.median(ratios), (min(ratios), max(ratios)), note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side (median)")
    parser.add_argument("--dim", type=int, default=256, help="LSTM units per direction")
    parser.add_argument("--layers", type=int, default=2, help="bidirectional layers")
    parser.add_argument("--seq-len", type=int, default=200, help="frames of the longest sequence")
    parser.add_argument("--batch-frames", type=int, default=5000, help="padded frames per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--plain-pack", choices=["auto", "yes", "no"], default="auto", help="auto: pack on cuda, not on cpu"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    args = parser.parse_args()
    memory.keep_freed_memory()  # as the app does (engine.keep_freed_memory); both sides benefit
    if args.quick:
        args.dim, args.seq_len, args.batch_frames, args.steps = 32, 50, 500, 2
    device = torch.device(args.device)
    args.pack = args.plain_pack == "yes" or (args.plain_pack == "auto" and device.type == "cuda")
    print(
        f"BLSTM-CTC {args.layers}x{args.dim} bidirectional, {FEATURES}-dim input, {CLASSES} classes, "
        f"sequences <= {args.seq_len} frames, {args.batch_frames} frames per batch, {args.steps} steps, "
        f"device {device}, {torch.get_num_threads()} threads, "
        f"plain nn.LSTM {'packed' if args.pack else 'padded'}"
    )
    if device.type == "cpu" and ops.native_available():
        together = "side by side" if ops.group_runs_concurrently(2, torch.zeros(1)) else "one after the other"
        print(f"seqtrain kernels ({build.variant()}): a BLSTM layer's two directions run {together}")
    else:
        print("seqtrain kernels: not built here, nativelstm runs the pure-PyTorch reference")
    header = f"{'variant':<22} {'seqtrain frames/s':>18} {'plain frames/s':>15} {'ratio':>7}"
    print(f"{header}  (range over rounds)")
    for label, unit, bf16 in (
        ("unit standardlstm", "standardlstm", False),
        ("unit nativelstm", "nativelstm", False),
        ("bf16 autocast (lstm)", "lstm", True),
    ):
        fps, ratio, (low, high), note = run_variant(unit, bf16, args, device)
        line = f"{label:<22} {fps['seqtrain']:>18.0f} {fps['plain']:>15.0f} {ratio:>7.2f}"
        print(f"{line}  ({low:.2f}-{high:.2f})  {note}", flush=True)


if __name__ == "__main__":
    main()

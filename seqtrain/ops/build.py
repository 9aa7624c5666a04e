"""Builds the csrc/ kernels with torch's JIT extension loader on first use, caches them per torch version,
and falls back to the pure-PyTorch reference (saying so once in the log) where no compiler is at hand."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

logger = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parent.parent


def csrc_dir() -> Path:
    """The kernel sources: $SEQTRAIN_CSRC, the wheel's copy (seqtrain/csrc), or the checkout's csrc/."""
    candidates = [os.environ.get("SEQTRAIN_CSRC"), _PACKAGE / "csrc", _PACKAGE.parent / "csrc"]
    for cand in candidates:
        if cand and (Path(cand) / "ops.h").is_file():
            return Path(cand)
    raise FileNotFoundError(f"seqtrain kernel sources (ops.h) not found in any of {candidates[1:]}")


def with_cuda() -> bool:
    """The .cu kernels are built only where torch can use a GPU; the CPU build needs no nvcc."""
    from torch.utils import cpp_extension

    return torch.cuda.is_available() and cpp_extension.CUDA_HOME is not None


# The x86 SIMD levels we compile for, best first: the /proc/cpuinfo flags each needs, its compiler flags, and
# the CPU_CAPABILITY that picks ATen's Vectorized width (with SLEEF's exp/tanh/log of that width, exported by
# libtorch_cpu), as torch's own kernels are built per capability. amx adds the bf16 LSTM (gemm_amx.h).
_AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"]
_SIMD_LEVELS = {
    "avx512-amx": (
        ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "amx_tile", "amx_bf16", "avx2", "fma"),
        [*_AVX512, "-mavx512bf16", "-mamx-tile", "-mamx-bf16"],
        "AVX512",
    ),
    "avx512": (("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"), _AVX512, "AVX512"),
    "avx2": (("avx2", "fma"), ["-mavx2", "-mfma"], "AVX2"),
}


@functools.cache
def _cpu_simd() -> str | None:
    """The best SIMD level of _SIMD_LEVELS this CPU has (Linux /proc/cpuinfo), else None."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    lines = (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags"))
    flags = next(lines, [])
    return next((name for name, (need, _, _) in _SIMD_LEVELS.items() if set(need) <= set(flags)), None)


def variant() -> str:
    """Names what the build was compiled for, so machines sharing a cache dir do not load a foreign build."""
    if with_cuda():
        return "cuda"
    simd = _cpu_simd()
    return f"cpu-{simd}" if simd else "cpu"


@functools.cache
def sources_hash() -> str:
    """A digest of every csrc/ file and of where they are. torch's JIT loader rebuilds when a .cpp changes
    but not when only a header does, so the digest names the build directory: changed sources never load a
    stale build; and two checkouts do not rebuild each other's (the ninja file names the source paths)."""
    return digest_sources(csrc_dir())


def digest_sources(src: Path) -> str:
    digest = hashlib.sha256(str(src.resolve()).encode())
    for path in sorted(src.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def build_directory() -> Path:
    """$TORCH_EXTENSIONS_DIR/seqtrain_ops/<torch>-<variant>-<sources>, else under ~/.cache/seqtrain/ops/."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        base = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "seqtrain_ops"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "seqtrain" / "ops"
    return base / f"torch-{torch.__version__}-{variant()}-{sources_hash()}"


def _openmp_flags() -> list[str]:
    """at::parallel_for is a header template: without -fopenmp it compiles to a serial loop. The extension
    then links "libgomp.so.1", which resolves to the copy torch has already loaded (one pool, not two)."""
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        return ["-fopenmp"]
    return []


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-O3", *_openmp_flags()]
    if with_cuda():
        cflags.append("-DSEQTRAIN_WITH_CUDA")
    elif simd := _cpu_simd():
        _, flags, capability = _SIMD_LEVELS[simd]
        cflags += [*flags, f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}"]
    return cflags, ["-O3", "-DSEQTRAIN_WITH_CUDA", "--expt-relaxed-constexpr"]


def build(verbose: bool = False) -> ModuleType:
    """Compiles (or loads the cached build of) the extension; raises if that fails."""
    src, directory = csrc_dir(), build_directory()
    module = compile_sources(src, f"seqtrain_ops_{variant().replace('-', '_')}", directory, verbose)
    (directory / _SOURCE_MARK).write_text(str(src.resolve()))
    prune_stale_builds(directory)
    return module


def compile_sources(
    src: Path, name: str, directory: Path, verbose: bool = False, defines: Sequence[str] = ()
) -> ModuleType:
    """Builds the kernel sources in `src` as extension module `name` in `directory` (this machine's flags,
    plus -D of each of `defines`). Two builds in one process need two names: CPython keeps one extension
    module per name, and a build loaded under a name already loaded is the first one again
    (benchmarks/kernel_ab.py names each)."""
    from torch.utils import cpp_extension

    sources = sorted(str(p) for p in src.glob("*.cpp"))
    if with_cuda():
        sources += sorted(str(p) for p in src.glob("*.cu"))
    directory.mkdir(parents=True, exist_ok=True)
    cflags, cuda_cflags = _flags()
    cflags = cflags + [f"-D{d}" for d in defines]
    with _environment_ninja():
        return cpp_extension.load(
            name=name,
            sources=sources,
            extra_cflags=cflags,
            extra_cuda_cflags=cuda_cflags,
            extra_ldflags=_openmp_flags(),
            extra_include_paths=[str(src)],
            build_directory=str(directory),
            verbose=verbose,
        )


@contextlib.contextmanager
def _environment_ninja():
    """torch runs the first `ninja` on PATH: the system's or this environment's, depending on whether the
    venv is activated. Two ninja versions record build commands differently, so alternating them rebuilds
    everything (~45 s here); the `ninja` package of this Python environment, where installed, goes first."""
    try:
        import ninja
    except ImportError:
        yield
        return
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
    try:
        yield
    finally:
        os.environ["PATH"] = path


_SOURCE_MARK = "csrc_dir.txt"  # in each build directory: the csrc/ it was built from


def prune_stale_builds(current: Path) -> list[Path]:
    """Removes the other build directories of this checkout's csrc/ for this torch and variant (earlier
    versions of its sources: each edit of csrc/ builds into a new directory); returns them. Builds of other
    checkouts, torch versions or variants stay."""
    removed = []
    kind, source = current.name.rsplit("-", 1)[0], (current / _SOURCE_MARK).read_text()
    for other in current.parent.glob(kind + "-*"):
        mark = other / _SOURCE_MARK
        same_kind = other.name.rsplit("-", 1)[0] == kind
        if other == current or not same_kind or not mark.is_file() or mark.read_text() != source:
            continue
        shutil.rmtree(other, ignore_errors=True)
        removed.append(other)
    return removed


def loop_timers_module() -> ModuleType:
    """The kernels built with SEQTRAIN_LOOP_TIMERS (phase times of the fused CPU loops, lstm_loop_phases;
    benchmarks/lstm_phases.py), cached beside the default build; raises where it cannot be built."""
    src = csrc_dir()
    directory = build_directory().parent / f"timers-{variant()}-{digest_sources(src)}"
    return compile_sources(src, "seqtrain_ops_timers", directory, defines=["SEQTRAIN_LOOP_TIMERS"])


@functools.cache
def native_module() -> ModuleType | None:
    """The built extension, or None (logged once) when it cannot be built."""
    start = time.perf_counter()
    try:
        module = build()
    except Exception as exc:  # no compiler, no ninja, a compile error: all mean "use the reference"
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        logger.warning(
            "seqtrain.ops: native kernels unavailable (%s); using the pure-PyTorch reference", reason
        )
        return None
    logger.info(
        "seqtrain.ops: using native kernels from %s (ready in %.1fs)",
        build_directory(),
        time.perf_counter() - start,
    )
    return module


def native_available() -> bool:
    """Whether the native kernels can be used (tries the build once per process)."""
    return native_module() is not None


def poison_outputs() -> bool:
    """Debug aid: with SEQTRAIN_OPS_POISON=1 the kernels fill their outputs with NaN first, so an element they
    forget to write shows up."""
    return os.environ.get("SEQTRAIN_OPS_POISON", "") not in ("", "0")


IMPLS = ("auto", "native", "reference")


def resolve_impl(impl: str, x: torch.Tensor) -> str:
    """'native' or 'reference': what runs for `impl` (auto, native, reference) on data like `x`."""
    if impl not in IMPLS:
        raise ValueError(f"seqtrain.ops: unknown impl {impl!r}; known: {', '.join(IMPLS)}")
    if impl == "reference":
        return impl
    problem = _native_problem(x)
    if problem is None:
        return "native"
    if impl == "native":
        raise RuntimeError(
            f"seqtrain.ops: impl='native' cannot run: {problem}; use impl='auto' or 'reference'"
        )
    return "reference"


def _native_problem(x: torch.Tensor) -> str | None:
    if x.dtype not in (torch.float32, torch.float64):
        return f"dtype {x.dtype} (the kernels take float32 and float64)"
    if x.device.type not in ("cpu", "cuda"):
        return f"device {x.device} (the kernels run on cpu and cuda)"
    module = native_module()
    if module is None:
        return "the native build failed (see the log of seqtrain.ops.build)"
    if x.is_cuda and not module.with_cuda:
        return "the native build has no CUDA kernels"
    return None

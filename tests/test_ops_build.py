"""seqtrain.ops build: `python -m seqtrain.ops build` prints the cache dir; a failed build falls back once."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqtrain import ops
from seqtrain.ops import build

REPO = Path(__file__).resolve().parents[1]


def test_cli_build_prints_the_build_directory():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "seqtrain.ops", "build"], env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.skip(f"native build failed here (no compiler?): {proc.stderr.strip()[-300:]}")
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == build.build_directory() and path.is_dir()
    assert any(path.glob("*.so")), f"no compiled module in {path}"


def test_build_directory_is_per_torch_version(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert build.build_directory().parent == tmp_path / "seqtrain_ops"
    assert torch.__version__ in build.build_directory().name


def test_build_directory_changes_with_any_source_file_headers_included(monkeypatch, tmp_path):
    """torch's loader alone reuses a build after a header-only change; the directory name prevents that."""
    src = tmp_path / "csrc"
    shutil.copytree(build.csrc_dir(), src)
    monkeypatch.setenv("SEQTRAIN_CSRC", str(src))
    build.sources_hash.cache_clear()
    try:
        before = build.build_directory()
        (src / "common.h").write_text((src / "common.h").read_text() + "\n// changed\n")
        build.sources_hash.cache_clear()
        assert build.build_directory() != before
        assert build.build_directory().parent == before.parent
    finally:
        build.sources_hash.cache_clear()


def test_a_build_prunes_earlier_builds_of_the_same_sources_dir_only(tmp_path):
    def build_dir(name: str, source: str | None) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "ops.so").write_text("")
        if source is not None:
            (path / build._SOURCE_MARK).write_text(source)
        return path

    current = build_dir("torch-2.13.0-cpu-avx2-aaaa", "/src/csrc")
    stale = build_dir("torch-2.13.0-cpu-avx2-bbbb", "/src/csrc")
    kept = [
        build_dir("torch-2.13.0-cpu-avx2-cccc", "/other/checkout/csrc"),
        build_dir("torch-2.13.0-cpu-dddd", "/src/csrc"),  # another variant (a prefix of this one's name)
        build_dir("torch-2.12.0-cpu-avx2-eeee", "/src/csrc"),  # another torch
        build_dir("torch-2.13.0-cpu-avx2-ffff", None),  # built before the marks: unknown source, kept
    ]
    assert build.prune_stale_builds(current) == [stale]
    assert not stale.exists()
    assert current.is_dir() and all(path.is_dir() for path in kept)


def test_build_runs_this_environments_ninja_whatever_comes_first_on_path(monkeypatch, tmp_path):
    """Two ninja versions (the system's, the venv's) record commands differently: alternating rebuilds."""
    ninja = pytest.importorskip("ninja")
    from torch.utils import cpp_extension

    seen = []
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin" + os.pathsep + os.environ["PATH"])  # as without the venv activated
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: seen.append(shutil.which("ninja")))
    before = os.environ["PATH"]
    build.build()
    assert Path(seen[0]).parent == Path(ninja.BIN_DIR)
    assert os.environ["PATH"] == before


def test_failed_build_falls_back_to_reference_and_logs_once(monkeypatch, caplog):
    def no_compiler(verbose=False):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(build, "build", no_compiler)
    build.native_module.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="seqtrain.ops.build"):
            assert not ops.native_available()
            x, w_ih, w_hh, bias = torch.randn(3, 2, 4), torch.randn(8, 4), torch.randn(8, 2), torch.randn(8)
            ops.lstm(x, w_ih, w_hh, bias, torch.tensor([3, 2]))
            ops.ctc_loss(torch.randn(3, 2, 4), torch.tensor([[1], [2]]), [3, 3], [1, 1])
            with pytest.raises(RuntimeError, match="impl='native' cannot run"):
                ops.lstm(x, w_ih, w_hh, bias, torch.tensor([3, 2]), impl="native")
        fallbacks = [r for r in caplog.records if "using the pure-PyTorch reference" in r.getMessage()]
        assert len(fallbacks) == 1 and "no C++ compiler found" in fallbacks[0].getMessage()
    finally:
        build.native_module.cache_clear()


def test_unknown_impl_names_the_choices():
    with pytest.raises(ValueError, match="known: auto, native, reference"):
        ops.ctc_loss(torch.randn(3, 1, 4), torch.tensor([[1]]), [3], [1], impl="fast")

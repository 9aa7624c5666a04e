#!/usr/bin/env bash
# Compile every csrc/*.cu to an object with nvcc, so CUDA kernels are checked on machines without a GPU.
# Skips (exit 0) with a message when nvcc is absent. Usage: .ci/compile_cuda.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  echo "compile_cuda: nvcc not found, skipping the CUDA compile check"
  exit 0
fi
python="${1:-python}"
includes=$("$python" -c 'import torch.utils.cpp_extension as e; print(" ".join("-I" + p for p in e.include_paths()))')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# A CPU-only torch wheel lacks this one generated header of c10/cuda; its content in CUDA builds is one define.
if ! "$python" -c 'import os, sys, torch.utils.cpp_extension as e
sys.exit(not any(os.path.exists(os.path.join(p, "c10/cuda/impl/cuda_cmake_macros.h")) for p in e.include_paths()))'; then
  echo "compile_cuda: torch is a CPU build; stubbing c10/cuda/impl/cuda_cmake_macros.h"
  mkdir -p "$out/include/c10/cuda/impl"
  echo '#define C10_CUDA_BUILD_SHARED_LIBS' >"$out/include/c10/cuda/impl/cuda_cmake_macros.h"
  includes="$includes -I$out/include"
fi
for cu in csrc/*.cu; do
  echo "compile_cuda: $cu"
  # shellcheck disable=SC2086  # $includes is a list of flags
  nvcc -c "$cu" -o "$out/$(basename "$cu").o" -std=c++17 -O3 $includes -DSEQTRAIN_WITH_CUDA \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -Xcompiler -fPIC --expt-relaxed-constexpr -Werror all-warnings
done
echo "compile_cuda: all csrc/*.cu compiled with $(nvcc --version | tail -1)"

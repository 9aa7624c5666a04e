// CUDA elementwise pass of one LSTM step: one thread per (sequence, unit), math from lstm.h.
#include "cuda_launch.cuh"
#include "lstm.h"

namespace seqtrain {
namespace {

template <typename T>
__global__ void fwd_kernel(LstmFwdStep<T> s) {
  const int64_t n = s.B * s.H;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x)
    lstm_fwd_span<T>(s, k / s.H, k % s.H, 1);
}

template <typename T>
__global__ void bwd_kernel(LstmBwdStep<T> s) {
  const int64_t n = s.B * s.H;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x)
    lstm_bwd_span<T>(s, k / s.H, k % s.H, 1);
}

}  // namespace

template <typename T>
void lstm_fwd_cells_cuda(const LstmFwdStep<T>& s) {
  if (s.B * s.H == 0) return;
  fwd_kernel<T><<<grid_for(s.B * s.H), kThreads, 0, current_stream()>>>(s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void lstm_bwd_cells_cuda(const LstmBwdStep<T>& s) {
  if (s.B * s.H == 0) return;
  bwd_kernel<T><<<grid_for(s.B * s.H), kThreads, 0, current_stream()>>>(s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void lstm_fwd_cells_cuda<float>(const LstmFwdStep<float>&);
template void lstm_fwd_cells_cuda<double>(const LstmFwdStep<double>&);
template void lstm_bwd_cells_cuda<float>(const LstmBwdStep<float>&);
template void lstm_bwd_cells_cuda<double>(const LstmBwdStep<double>&);

}  // namespace seqtrain

// CUDA CTC kernels: one block per sequence, threads over the extended labels; the time recursion synchronises
// the block once per frame. Math from ctc.h.
#include "ctc.h"
#include "cuda_launch.cuh"

namespace seqtrain {
namespace {

template <typename T>
__global__ void alpha_kernel(CtcArgs<T> a) {
  const int64_t b = blockIdx.x, Tb = a.input_lengths[b], L = 2 * a.target_lengths[b] + 1;
  const int64_t Lmax = 2 * a.max_target + 1, frame = a.batch * a.classes;
  if (Tb == 0) {  // uniform over the block, so no thread misses a barrier
    if (threadIdx.x == 0) a.loss[b] = ctc_empty_input_loss<T>(a.target_lengths[b]);
    return;
  }
  const int64_t* tg = a.targets + b * a.max_target;
  T* al = a.alpha + b * a.max_time * Lmax;
  const T* lp = a.log_probs + b * a.classes;
  for (int64_t s = threadIdx.x; s < L; s += blockDim.x) al[s] = ctc_alpha_init(s, lp[ctc_label(tg, s, a.blank)]);
  __syncthreads();
  for (int64_t t = 1; t < Tb; ++t) {
    T* row = al + t * Lmax;
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x)
      row[s] = ctc_alpha_step(row - Lmax, tg, s, lp[t * frame + ctc_label(tg, s, a.blank)]);
    __syncthreads();
  }
  if (threadIdx.x == 0) a.loss[b] = -ctc_log_likelihood(al + (Tb - 1) * Lmax, L);
}

template <typename T>
__device__ void zero_frames(const CtcArgs<T>& a, int64_t b, int64_t from) {
  for (int64_t t = from; t < a.max_time; ++t)
    for (int64_t c = threadIdx.x; c < a.classes; c += blockDim.x) a.grad[(t * a.batch + b) * a.classes + c] = T(0);
}

template <typename T>
__global__ void grad_kernel(CtcArgs<T> a) {
  const int64_t b = blockIdx.x, Tb = a.input_lengths[b], L = 2 * a.target_lengths[b] + 1;
  const int64_t Lmax = 2 * a.max_target + 1, frame = a.batch * a.classes;
  const T loss = a.loss[b], g = a.grad_out[b];
  if (Tb == 0 || loss == T(INFINITY)) return zero_frames(a, b, 0);  // impossible: zero gradient, not NaN
  zero_frames(a, b, Tb);
  const int64_t* tg = a.targets + b * a.max_target;
  const T* al = a.alpha + b * a.max_time * Lmax;
  T* beta = a.beta + b * 2 * Lmax;
  for (int64_t t = Tb - 1; t >= 0; --t) {
    T* cur = beta + (t % 2) * Lmax;
    const T* next = beta + ((t + 1) % 2) * Lmax;
    const T* lpt = a.log_probs + t * frame + b * a.classes;
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x)
      cur[s] = t == Tb - 1 ? ctc_beta_init<T>(s, L) : ctc_beta_step(next, lpt + frame, tg, s, L, a.blank);
    T* gt = a.grad + t * frame + b * a.classes;
    for (int64_t c = threadIdx.x; c < a.classes; c += blockDim.x) gt[c] = g * st_exp(lpt[c]);
    __syncthreads();
    // Labels repeat (every blank, repeated labels), so several s add to one class.
    for (int64_t s = threadIdx.x; s < L; s += blockDim.x)
      atomicAdd(gt + ctc_label(tg, s, a.blank), -g * ctc_occupancy(al[t * Lmax + s], cur[s], loss));
    __syncthreads();
  }
}

}  // namespace

template <typename T>
void ctc_alpha_cuda(const CtcArgs<T>& a) {
  if (a.batch == 0) return;
  alpha_kernel<T><<<a.batch, kThreads, 0, current_stream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void ctc_grad_cuda(const CtcArgs<T>& a) {
  if (a.batch == 0) return;
  grad_kernel<T><<<a.batch, kThreads, 0, current_stream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void ctc_alpha_cuda<float>(const CtcArgs<float>&);
template void ctc_alpha_cuda<double>(const CtcArgs<double>&);
template void ctc_grad_cuda<float>(const CtcArgs<float>&);
template void ctc_grad_cuda<double>(const CtcArgs<double>&);

}  // namespace seqtrain

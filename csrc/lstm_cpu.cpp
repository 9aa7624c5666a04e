// CPU side of the LSTM: the elementwise pass of one step (SIMD over units, at::parallel_for over sequence × unit
// block), and the fused time loops: each thread owns a range of units, computes their four gate columns of
// the recurrent GEMM (gemm_simd.h, W_hh packed once per call) and right after, while they are in its cache,
// their cell update; one OpenMP region per call with one barrier per step (see StepBuffers).
#include <ATen/Parallel.h>

#include <memory>

#include "vec_math.h"  // before lstm.h: its templates must see the Vectorized overloads
#include "lstm.h"

#if defined(__AVX2__) && defined(__FMA__)
#define SEQTRAIN_SIMD_GEMM
#include "gemm_simd.h"
#include "parallel_steps.h"
#endif

namespace seqtrain {
namespace {

constexpr int64_t kBlock = 64;  // units per work item: a multiple of every SIMD width, small enough to split B·H

// Calls span(b, j, n) for every block of at most kBlock units of every sequence, in parallel.
template <typename T, typename Span>
void for_each_block(int64_t B, int64_t H, const Span& span) {
  using V = at::vec::Vectorized<T>;
  const int64_t blocks = (H + kBlock - 1) / kBlock;
  at::parallel_for(0, B * blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / blocks, j0 = (item % blocks) * kBlock, j1 = std::min(j0 + kBlock, H);
      for (int64_t j = j0; j < j1; j += V::size()) span(b, j, static_cast<int>(std::min<int64_t>(V::size(), j1 - j)));
    }
  });
}

}  // namespace

template <typename T>
void lstm_fwd_cells_cpu(const LstmFwdStep<T>& s) {
  for_each_block<T>(s.B, s.H, [&](int64_t b, int64_t j, int n) { lstm_fwd_span<at::vec::Vectorized<T>>(s, b, j, n); });
}

template <typename T>
void lstm_bwd_cells_cpu(const LstmBwdStep<T>& s) {
  for_each_block<T>(s.B, s.H, [&](int64_t b, int64_t j, int n) { lstm_bwd_span<at::vec::Vectorized<T>>(s, b, j, n); });
}

#ifdef SEQTRAIN_SIMD_GEMM
namespace {

using Vf = at::vec::Vectorized<float>;

std::unique_ptr<float[]> uninitialized(int64_t n) { return std::unique_ptr<float[]>(new float[n]); }

// W packed for the GEMMs of one call: op(W)[k][n] = w[k * s_k + n * s_n], [K, N].
std::unique_ptr<float[]> pack_weights(const float* w, int64_t s_k, int64_t s_n, int64_t K, int64_t N) {
  auto packed = uninitialized(simd::packed_size(K, N));
  at::parallel_for(0, simd::panels(N), 1,
                   [&](int64_t p0, int64_t p1) { simd::pack_b(w, s_k, s_n, K, N, packed.get(), p0, p1); });
  return packed;
}

template <typename Span>
void for_units(int64_t B, int64_t j0, int64_t j1, const Span& span) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = j0; j < j1; j += Vf::size()) span(b, j, static_cast<int>(std::min<int64_t>(Vf::size(), j1 - j)));
}

}  // namespace

// The packed A of a step's recurrent GEMM is shared: each thread packs the columns of its own units right
// after its cell pass wrote them, into the buffer of the next step (StepBuffers).
bool lstm_fwd_loop_cpu(const LstmFwdLoop& L) {
  const int64_t B = L.B, H = L.H, N = 4 * H, blocks = H / simd::kNr;
  if (H % simd::kNr != 0 || B == 0) return false;
  const auto w = pack_weights(L.w_hh, 1, H, H, N);  // op(W) = W_hh^T [H, 4H]
  const StepBuffers<float> a(simd::packed_a_size(B, H));  // h_prev
  parallel_steps(blocks, [&](int64_t u0, int64_t u1, const auto& barrier) {
    const int64_t j0 = u0 * simd::kNr, j1 = u1 * simd::kNr;
    simd::pack_a(fwd_step(L, 0).h_prev, H, B, H, a[0], j0, j1);
    barrier();
    for (int64_t step = 0; step < L.T; ++step) {
      const LstmFwdStep<float> s = fwd_step(L, step);
      const float* next = next_gates(L, step);
      for (int64_t q = 0; q < 4; ++q) simd::gemm_panels(a[step], w.get(), H, N, s.gates, N, B, q * blocks + u0, q * blocks + u1);
      for_units(B, j0, j1, [&](int64_t b, int64_t j, int n) {
        lstm_fwd_span<Vf>(s, b, j, n);
        prefetch_gates(next, b, j, H);
      });
      if (step + 1 < L.T) simd::pack_a(s.h, H, B, H, a[step + 1], j0, j1);  // s.h: the next step's h_prev
      barrier();  // every unit's h packed before the next step's GEMM reads them all
    }
  });
  return true;
}

bool lstm_bwd_loop_cpu(const LstmBwdLoop& L) {
  const int64_t B = L.B, H = L.H, N = 4 * H, blocks = H / simd::kNr;
  if (H % simd::kNr != 0 || B == 0) return false;
  const auto w = pack_weights(L.w_hh, H, 1, N, H);  // op(W) = W_hh [4H, H]
  const StepBuffers<float> a(simd::packed_a_size(B, N));  // the step's gate gradients
  parallel_steps(blocks, [&](int64_t u0, int64_t u1, const auto& barrier) {
    const int64_t j0 = u0 * simd::kNr, j1 = u1 * simd::kNr;
    for (int64_t step = L.T - 1; step >= 0; --step) {
      const LstmBwdStep<float> s = bwd_step(L, step);
      for_units(B, j0, j1, [&](int64_t b, int64_t j, int n) { lstm_bwd_span<Vf>(s, b, j, n); });
      for (int64_t q = 0; q < 4; ++q) simd::pack_a(s.d_gates, N, B, N, a[step], q * H + j0, q * H + j1);
      barrier();  // every unit's gate gradients before the GEMM that needs them all
      // dh of this thread's units only, read again by its own next cell pass: no second barrier
      simd::gemm_panels(a[step], w.get(), N, H, s.dh, H, B, u0, u1);
    }
  });
  return true;
}
#else
bool lstm_fwd_loop_cpu(const LstmFwdLoop&) { return false; }
bool lstm_bwd_loop_cpu(const LstmBwdLoop&) { return false; }
#endif

template void lstm_fwd_cells_cpu<float>(const LstmFwdStep<float>&);
template void lstm_fwd_cells_cpu<double>(const LstmFwdStep<double>&);
template void lstm_bwd_cells_cpu<float>(const LstmBwdStep<float>&);
template void lstm_bwd_cells_cpu<double>(const LstmBwdStep<double>&);

}  // namespace seqtrain

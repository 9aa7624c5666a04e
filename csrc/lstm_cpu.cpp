// CPU side of the LSTM: the elementwise pass of one step (SIMD over units, at::parallel_for over sequence × unit
// block), and the fused time loops: each thread owns a range of units, computes their four gate columns of
// the recurrent GEMM (gemm_simd.h or gemm_bcast.h, W_hh packed once per call) and right after, while they are
// in its cache, their cell update; one OpenMP region per call with one barrier per step (see StepBuffers).
#include <ATen/Parallel.h>

#include <memory>

#include "vec_math.h"  // before lstm.h: its templates must see the Vectorized overloads
#include "lstm.h"
#include "loop_timers.h"

#if defined(__AVX2__) && defined(__FMA__)
#define SEQTRAIN_SIMD_GEMM
#include "gemm_simd.h"
#if defined(__AVX512F__)
#include "gemm_bcast.h"
#endif
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

// The two recurrent GEMMs behind one interface, over column ranges [n0, n1) that are multiples of kNr.
struct PanelGemm {  // gemm_simd.h: batch rows broadcast, weight columns in the lanes
  static int64_t packed_size(int64_t K, int64_t N) { return simd::packed_size(K, N); }
  static int64_t packed_a_size(int64_t M, int64_t K) { return simd::packed_a_size(M, K); }
  static void pack_b(const float* w, int64_t s_k, int64_t s_n, int64_t K, int64_t N, float* dst, int64_t n0,
                     int64_t n1) {
    simd::pack_b(w, s_k, s_n, K, N, dst, n0 / simd::kNr, n1 / simd::kNr);
  }
  static void pack_a(const float* a, int64_t lda, int64_t M, int64_t K, float* dst, int64_t k0, int64_t k1) {
    simd::pack_a(a, lda, M, K, dst, k0, k1);
  }
  static void gemm(const float* a, const float* w, int64_t K, int64_t N, float* c, int64_t ldc, int64_t M,
                   int64_t n0, int64_t n1) {
    simd::gemm_panels(a, w, K, N, c, ldc, M, n0 / simd::kNr, n1 / simd::kNr);
  }
};

#if defined(__AVX512F__)
#define SEQTRAIN_BCAST_GEMM
struct BcastGemm {  // gemm_bcast.h: weights broadcast, batch rows in the lanes
  static int64_t packed_size(int64_t K, int64_t N) { return bcast::packed_size(K, N); }
  static int64_t packed_a_size(int64_t M, int64_t K) { return bcast::packed_a_size(M, K); }
  int64_t B;  // the batch, which sets the packed tiles' width
  void pack_b(const float* w, int64_t s_k, int64_t s_n, int64_t K, int64_t, float* dst, int64_t n0, int64_t n1) const {
    bcast::pack_b(w, s_k, s_n, K, B, dst, n0, n1);
  }
  static void pack_a(const float* a, int64_t lda, int64_t M, int64_t, float* dst, int64_t k0, int64_t k1) {
    bcast::pack_a(a, lda, M, dst, k0, k1);
  }
  static void gemm(const float* a, const float* w, int64_t K, int64_t, float* c, int64_t ldc, int64_t M, int64_t n0,
                   int64_t n1) {
    bcast::gemm(a, w, K, c, ldc, M, n0, n1);
  }
};
#endif

std::unique_ptr<float[]> uninitialized(int64_t n) { return std::unique_ptr<float[]>(new float[n]); }

template <typename Span>
void for_units(int64_t B, int64_t j0, int64_t j1, const Span& span) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = j0; j < j1; j += Vf::size()) span(b, j, static_cast<int>(std::min<int64_t>(Vf::size(), j1 - j)));
}

// Each thread packs the weight columns of its own units (the only ones its GEMMs read, so no barrier) and,
// right after its cell pass wrote them, its units' columns of the next step's shared left operand (StepBuffers).
template <typename G>
void fwd_loop(const LstmFwdLoop& L, const G& g) {
  const int64_t B = L.B, H = L.H, N = 4 * H, blocks = H / simd::kNr;
  const auto w = uninitialized(g.packed_size(H, N));  // op(W) = W_hh^T [H, 4H]
  const StepBuffers<float> a(g.packed_a_size(B, H));   // h_prev
  parallel_steps(blocks, [&](int64_t u0, int64_t u1, const auto& barrier) {
    const int64_t j0 = u0 * simd::kNr, j1 = u1 * simd::kNr;
    LapTimer lap;
    for (int64_t q = 0; q < 4; ++q) g.pack_b(L.w_hh, 1, H, H, N, w.get(), q * H + j0, q * H + j1);
    g.pack_a(fwd_step(L, 0).h_prev, H, B, H, a[0], j0, j1);
    barrier();
    lap(Phase::fwd_pack_w);
    for (int64_t step = 0; step < L.T; ++step) {
      const LstmFwdStep<float> s = fwd_step(L, step);
      const float* next = next_gates(L, step);
      for (int64_t q = 0; q < 4; ++q) g.gemm(a[step], w.get(), H, N, s.gates, N, B, q * H + j0, q * H + j1);
      lap(Phase::fwd_gemm);
      for_units(B, j0, j1, [&](int64_t b, int64_t j, int n) {
        lstm_fwd_span<Vf>(s, b, j, n);
        prefetch_gates(next, b, j, H);
      });
      lap(Phase::fwd_cells);
      if (step + 1 < L.T) g.pack_a(s.h, H, B, H, a[step + 1], j0, j1);  // s.h: the next step's h_prev
      lap(Phase::fwd_pack_a);
      barrier();  // every unit's h packed before the next step's GEMM reads them all
      lap(Phase::fwd_barrier);
    }
  });
}

template <typename G>
void bwd_loop(const LstmBwdLoop& L, const G& g) {
  const int64_t B = L.B, H = L.H, N = 4 * H, blocks = H / simd::kNr;
  const auto w = uninitialized(g.packed_size(N, H));  // op(W) = W_hh [4H, H]
  const StepBuffers<float> a(g.packed_a_size(B, N));   // the step's gate gradients
  parallel_steps(blocks, [&](int64_t u0, int64_t u1, const auto& barrier) {
    const int64_t j0 = u0 * simd::kNr, j1 = u1 * simd::kNr;
    LapTimer lap;
    g.pack_b(L.w_hh, H, 1, N, H, w.get(), j0, j1);
    lap(Phase::bwd_pack_w);
    for (int64_t step = L.T - 1; step >= 0; --step) {
      const LstmBwdStep<float> s = bwd_step(L, step);
      for_units(B, j0, j1, [&](int64_t b, int64_t j, int n) { lstm_bwd_span<Vf>(s, b, j, n); });
      lap(Phase::bwd_cells);
      for (int64_t q = 0; q < 4; ++q) g.pack_a(s.d_gates, N, B, N, a[step], q * H + j0, q * H + j1);
      lap(Phase::bwd_pack_a);
      barrier();  // every unit's gate gradients before the GEMM that needs them all
      lap(Phase::bwd_barrier);
      // dh of this thread's units only, read again by its own next cell pass: no second barrier
      g.gemm(a[step], w.get(), N, H, s.dh, H, B, j0, j1);
      lap(Phase::bwd_gemm);
    }
  });
}

// Runs loop(gemm) with the GEMM policy for this batch (false where the fused loops do not apply): gemm_bcast.h
// where the batch nearly fills its vectors. In benchmarks/kernel_ab.py against gemm_simd.h alone: (a), (c) (B = 32)
// forward 0.94–0.97 of the time, forward+backward 0.96–1.05 (median 0.98); (b) (B = 16) 0.97 / 0.98; B = 25 (25
// of 32 lanes) 1.05 / 1.05, so partly filled vectors stay with gemm_simd.h.
template <typename Loop, typename Run>
bool with_gemm(const Loop& L, const Run& loop) {
  if (L.H % simd::kNr != 0 || L.B == 0) return false;
#ifdef SEQTRAIN_BCAST_GEMM
  if (L.B >= 16 && 10 * L.B >= 9 * bcast::lanes(L.B)) return loop(BcastGemm{L.B}), true;
#endif
  loop(PanelGemm{});
  return true;
}

}  // namespace

bool lstm_fwd_loop_cpu(const LstmFwdLoop& L) {
  return with_gemm(L, [&](auto gemm) { fwd_loop(L, gemm); });
}

bool lstm_bwd_loop_cpu(const LstmBwdLoop& L) {
  return with_gemm(L, [&](auto gemm) { bwd_loop(L, gemm); });
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

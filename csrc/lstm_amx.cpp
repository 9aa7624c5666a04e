// The LSTM's time loops with the recurrent GEMM in bf16 on AMX (gemm_amx.h), for engine.torch_amp: bfloat16.
// Same shape as the fp32 loops of lstm_cpu.cpp: each thread owns a range of 16-unit tiles, computes their four
// gate columns and right after their cell update. Only the GEMM operands are bf16 (the previous h, or the
// step's gate gradients, rounded once); gates, cell state, h and all accumulation stay fp32.
#include <ATen/Parallel.h>

#include <vector>

#include "vec_math.h"  // before lstm.h: its templates must see the Vectorized overloads
#include "lstm.h"
#include "gemm_amx.h"
#include "parallel_steps.h"

namespace seqtrain {

#ifdef SEQTRAIN_AMX
namespace {

using Vf = at::vec::Vectorized<float>;
using amx::bf16;
constexpr int64_t kUnits = amx::kRows;  // units per tile

// W packed for the bf16 GEMMs of one call: op(W)[k][n] = w[k * s_k + n * s_n], [K, N].
std::vector<bf16> pack_weights(const float* w, int64_t s_k, int64_t s_n, int64_t K, int64_t N) {
  std::vector<bf16> packed(amx::packed_b_size(K, N));
  at::parallel_for(0, N / kUnits, 1,
                   [&](int64_t t0, int64_t t1) { amx::pack_b(w, s_k, s_n, K, N, packed.data(), t0, t1); });
  return packed;
}

// Applies span(b, j, n) to units [u0, u1) tiles of every sequence, and then done(b, j) per 16 units.
template <typename Span, typename Done>
void for_unit_tiles(int64_t B, int64_t u0, int64_t u1, const Span& span, const Done& done) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = u0 * kUnits; j < u1 * kUnits; j += kUnits) {
      for (int64_t v = 0; v < kUnits; v += Vf::size()) span(b, j + v, static_cast<int>(Vf::size()));
      done(b, j);
    }
}

}  // namespace

bool lstm_amx_available() { return amx::enable(); }

bool lstm_projection_amx(const float* x, const float* w_ih, int64_t rows, int64_t in, int64_t H, float* gates) {
  const int64_t N = 4 * H;
  if (H % kUnits != 0 || !amx::enable()) return false;
  const std::vector<bf16> w = pack_weights(w_ih, 1, in, in, N);  // op(W) = W_ih^T [in, 4H]
  const int64_t lda = amx::round_up(in, amx::kK), block = 2 * amx::kRows;
  // Row blocks of 32 frames: each thread rounds its block of x to bf16 (K padded with zeros) and adds
  // x·W_ih^T to the gates (zero here; the cell pass adds the bias).
  at::parallel_for(0, (rows + block - 1) / block, 1, [&](int64_t r0, int64_t r1) {
    std::vector<bf16> a(block * lda, 0);
    amx::configure();
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t m0 = r * block, m = std::min(block, rows - m0);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t k = 0; k < in; k += kUnits)
          amx::to_bf16(x + (m0 + i) * in + k, a.data() + i * lda + k, std::min(kUnits, in - k));
      amx::gemm_tiles(a.data(), lda, w.data(), in, gates + m0 * N, N, m, 0, N / kUnits);
    }
    _tile_release();
  });
  return true;
}

bool lstm_fwd_loop_amx(const LstmFwdLoop& L) {
  const int64_t B = L.B, H = L.H, N = 4 * H, tiles = H / kUnits;
  if (H % kUnits != 0 || B == 0 || !amx::enable()) return false;
  const std::vector<bf16> w = pack_weights(L.w_hh, 1, H, H, N);  // op(W) = W_hh^T [H, 4H]
  // h_prev in bf16 for the GEMM (StepBuffers: a step's cell pass writes the next h while other threads may
  // still read this one). K padded to 32 and rows to 16 with zeros, as the A tiles read them.
  const int64_t lda = amx::round_up(H, amx::kK), rows = amx::round_up(B, amx::kRows);
  const StepBuffers<bf16> h16(rows * lda);
  const float* h0 = L.hs + frame_at(0, L.T, L.direction).prev * B * H;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; j += kUnits) amx::to_bf16(h0 + b * H + j, h16[0] + b * lda + j);
  parallel_steps(tiles, [&](int64_t u0, int64_t u1, const auto& barrier) {
    amx::configure();
    for (int64_t step = 0; step < L.T; ++step) {
      const LstmFwdStep<float> s = fwd_step(L, step);
      const bf16* h_in = h16[step];
      bf16* h_out = h16[step + 1];
      const float* next = next_gates(L, step);
      for (int64_t q = 0; q < 4; ++q) amx::gemm_tiles(h_in, lda, w.data(), H, s.gates, N, B, q * tiles + u0, q * tiles + u1);
      for_unit_tiles(
          B, u0, u1,
          [&](int64_t b, int64_t j, int n) {
            lstm_fwd_span<Vf>(s, b, j, n);
            prefetch_gates(next, b, j, H);
          },
          [&](int64_t b, int64_t j) { amx::to_bf16(s.h + b * H + j, h_out + b * lda + j); });
      barrier();  // h_out complete before any thread's next GEMM reads it
    }
    _tile_release();
  });
  return true;
}

bool lstm_bwd_loop_amx(const LstmBwdLoop& L) {
  const int64_t B = L.B, H = L.H, N = 4 * H, tiles = H / kUnits;
  if (H % kUnits != 0 || B == 0 || !amx::enable()) return false;
  const std::vector<bf16> w = pack_weights(L.w_hh, H, 1, N, H);  // op(W) = W_hh [4H, H]
  // The step's gate gradients in bf16 (4H is a multiple of 64: no K padding), rows padded to 16 with zeros.
  const StepBuffers<bf16> dg16(amx::round_up(B, amx::kRows) * N);
  parallel_steps(tiles, [&](int64_t u0, int64_t u1, const auto& barrier) {
    amx::configure();
    for (int64_t step = L.T - 1; step >= 0; --step) {
      const LstmBwdStep<float> s = bwd_step(L, step);
      for_unit_tiles(
          B, u0, u1, [&](int64_t b, int64_t j, int n) { lstm_bwd_span<Vf>(s, b, j, n); },
          [&](int64_t b, int64_t j) {
            for (int64_t q = 0; q < 4; ++q) amx::to_bf16(s.d_gates + b * N + q * H + j, dg16[step] + b * N + q * H + j);
          });
      barrier();  // every unit's gate gradients before the GEMM that needs them all
      // dh of this thread's units only, read again by its own next cell pass: no second barrier
      amx::gemm_tiles(dg16[step], N, w.data(), N, s.dh, H, B, u0, u1);
    }
    _tile_release();
  });
  return true;
}
#else
bool lstm_amx_available() { return false; }
bool lstm_projection_amx(const float*, const float*, int64_t, int64_t, int64_t, float*) { return false; }
bool lstm_fwd_loop_amx(const LstmFwdLoop&) { return false; }
bool lstm_bwd_loop_amx(const LstmBwdLoop&) { return false; }
#endif

}  // namespace seqtrain

// A small AVX2/FMA GEMM for the recurrent products of the LSTM: C[M,N] += A[M,K]·B[K,N] with B packed once per
// call into panels of 16 columns (K×16, zero-padded), since the same B serves every time step. At M = 16–32
// rows a general sgemm spends a third of its time re-packing B every call; here the packed panels stay put and
// each thread owns a fixed set of them, so their slice of B stays in its own cache across steps.
// Register tile: 6 rows × 16 columns = 12 accumulators (BLIS's Haswell shape).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace seqtrain {
namespace avx2 {

constexpr int64_t kNr = 16;   // columns per packed panel
constexpr int kMr = 6;        // rows per register tile
constexpr int64_t kKc = 256;  // K block: a 16 KB panel slice stays in L1 while the row tiles pass over it

inline int64_t panels(int64_t n) { return (n + kNr - 1) / kNr; }
inline int64_t packed_size(int64_t k, int64_t n) { return panels(n) * kNr * k; }
inline int64_t packed_a_size(int64_t m, int64_t k) { return (m + kMr - 1) / kMr * kMr * k; }

// Packs B[k][n] = src[k * s_k + n * s_n] into panels: dst[(p * K + k) * 16 + c] = B[k][16p + c], 0 past N.
inline void pack_b(const float* src, int64_t s_k, int64_t s_n, int64_t K, int64_t N, float* dst, int64_t p0,
                   int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kNr, nc = std::min(kNr, N - n0);
    float* d = dst + p * K * kNr;
    for (int64_t k = 0; k < K; ++k, d += kNr) {
      int64_t c = 0;
      for (; c < nc; ++c) d[c] = src[k * s_k + (n0 + c) * s_n];
      for (; c < kNr; ++c) d[c] = 0.f;
    }
  }
}

// Packs rows m0.. of A [M, K] (row stride lda) into row panels of kMr: dst[(mb * K + k) * kMr + r], 0 past M.
inline void pack_a(const float* a, int64_t lda, int64_t M, int64_t K, float* dst) {
  for (int64_t m0 = 0; m0 < M; m0 += kMr) {
    const int64_t mr = std::min<int64_t>(kMr, M - m0);
    float* d = dst + m0 * K;
    for (int64_t k = 0; k < K; ++k, d += kMr) {
      int64_t r = 0;
      for (; r < mr; ++r) d[r] = a[(m0 + r) * lda + k];
      for (; r < kMr; ++r) d[r] = 0.f;
    }
  }
}

// C[0:MR, 0:16] += A[0:MR, 0:kc] · panel[0:kc, 0:16] with A packed (kMr per k); nc < 16 stores nc columns.
template <int MR>
inline void tile(const float* a, const float* b, int64_t kc, float* c, int64_t ldc, int64_t nc) {
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k, b += kNr, a += kMr) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  }
  if (nc == kNr) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), acc0[r]));
      _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), acc1[r]));
    }
    return;
  }
  alignas(32) float tmp[kNr];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(tmp, acc0[r]);
    _mm256_store_ps(tmp + 8, acc1[r]);
    for (int64_t j = 0; j < nc; ++j) c[r * ldc + j] += tmp[j];
  }
}

// C[M, cols of panels p0..p1) += A[M, K] · B, both packed (pack_a, pack_b); C rows at stride ldc.
inline void gemm_panels(const float* a, const float* packed, int64_t K, int64_t N, float* c, int64_t ldc, int64_t M,
                        int64_t p0, int64_t p1) {
  for (int64_t k0 = 0; k0 < K; k0 += kKc) {
    const int64_t kc = std::min(kKc, K - k0);
    for (int64_t p = p0; p < p1; ++p) {
      const float* b = packed + (p * K + k0) * kNr;
      const int64_t n0 = p * kNr, nc = std::min(kNr, N - n0);
      int64_t m = 0;
      for (; m + kMr <= M; m += kMr) tile<kMr>(a + m * K + k0 * kMr, b, kc, c + m * ldc + n0, ldc, nc);
      const float* am = a + m * K + k0 * kMr;
      float* cm = c + m * ldc + n0;
      switch (M - m) {
        case 1: tile<1>(am, b, kc, cm, ldc, nc); break;
        case 2: tile<2>(am, b, kc, cm, ldc, nc); break;
        case 3: tile<3>(am, b, kc, cm, ldc, nc); break;
        case 4: tile<4>(am, b, kc, cm, ldc, nc); break;
        case 5: tile<5>(am, b, kc, cm, ldc, nc); break;
        default: break;
      }
    }
  }
}

}  // namespace avx2
}  // namespace seqtrain

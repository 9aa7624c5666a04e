// A small SIMD GEMM for the recurrent products of the LSTM: C[M,N] += A[M,K]·B[K,N] with B packed once per call
// into panels of kNr columns (K×kNr, zero-padded), since the same B serves every time step. At M = 16–32 rows a
// general sgemm spends a third of its time re-packing B every call; here the packed panels stay put and each
// thread owns a fixed set of them, so their slice of B stays in its own cache across steps.
// Register tile: up to kMr rows × 2 vectors. AVX-512: 12 × 32 (24 of the 32 zmm registers accumulate, BLIS's
// Skylake-X shape transposed); AVX2/FMA: 6 × 16 (12 of 16 ymm, BLIS's Haswell shape). M is split into equal
// row tiles (M = 16: 2 × 8, not 12 + 4), so no tile is too short to hide the FMA latency.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <utility>

namespace seqtrain {
namespace simd {

#if defined(__AVX512F__)
using Reg = __m512;
constexpr int kWidth = 16;
constexpr int kMr = 12;
inline Reg zero() { return _mm512_setzero_ps(); }
inline Reg load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
inline Reg bcast(const float* p) { return _mm512_set1_ps(*p); }
inline Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
inline Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
#else
using Reg = __m256;
constexpr int kWidth = 8;
constexpr int kMr = 6;
inline Reg zero() { return _mm256_setzero_ps(); }
inline Reg load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
inline Reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
inline Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
#endif

constexpr int64_t kNr = 2 * kWidth;  // columns per packed panel
constexpr int64_t kKc = 256;         // K block: the panel slice (32 KB with AVX-512) stays in L1 for all row tiles

inline int64_t panels(int64_t n) { return (n + kNr - 1) / kNr; }
inline int64_t packed_size(int64_t k, int64_t n) { return panels(n) * kNr * k; }
// Rows per tile for M rows: the fewest tiles of at most kMr, as equal as possible.
inline int64_t tile_rows(int64_t m) {
  const int64_t tiles = std::max<int64_t>(1, (m + kMr - 1) / kMr);
  return (m + tiles - 1) / tiles;
}
inline int64_t packed_a_size(int64_t m, int64_t k) { return m * k; }

// Packs B[k][n] = src[k * s_k + n * s_n] into panels: dst[(p * K + k) * kNr + c] = B[k][kNr·p + c], 0 past N.
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

// Packs columns [k0, k1) of A [M, K] (row stride lda) into row tiles of mr = tile_rows(M): the tile at m0
// holds dst[m0 * K + k * mr + r] = A[m0 + r][k] (the last tile has M - m0 rows, same layout). Threads may pack
// disjoint column ranges of one A in parallel.
inline void pack_a(const float* a, int64_t lda, int64_t M, int64_t K, float* dst, int64_t k0, int64_t k1) {
  const int64_t mr = tile_rows(M);
  for (int64_t m0 = 0; m0 < M; m0 += mr) {
    const int64_t rows = std::min(mr, M - m0);
    float* d = dst + m0 * K + k0 * rows;
    for (int64_t k = k0; k < k1; ++k, d += rows)
      for (int64_t r = 0; r < rows; ++r) d[r] = a[(m0 + r) * lda + k];
  }
}

// C[0:MR, 0:kNr] += A[0:MR, 0:kc] · panel[0:kc, 0:kNr] with A packed (MR per k); nc < kNr stores nc columns.
template <int MR>
inline void tile(const float* a, const float* b, int64_t kc, float* c, int64_t ldc, int64_t nc) {
  Reg acc0[MR], acc1[MR];
#pragma GCC unroll 42
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = zero();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k, b += kNr, a += MR) {
    const Reg b0 = load(b), b1 = load(b + kWidth);
#pragma GCC unroll 42
    for (int r = 0; r < MR; ++r) {
      const Reg av = bcast(a + r);
      acc0[r] = fma(av, b0, acc0[r]);
      acc1[r] = fma(av, b1, acc1[r]);
    }
  }
  if (nc == kNr) {
#pragma GCC unroll 42
    for (int r = 0; r < MR; ++r) {
      float* cr = c + r * ldc;
      store(cr, add(load(cr), acc0[r]));
      store(cr + kWidth, add(load(cr + kWidth), acc1[r]));
    }
    return;
  }
  alignas(64) float tmp[kNr];
#pragma GCC unroll 12  // also here: a runtime index would keep the accumulators in memory, not registers
  for (int r = 0; r < MR; ++r) {
    store(tmp, acc0[r]);
    store(tmp + kWidth, acc1[r]);
    for (int64_t j = 0; j < nc; ++j) c[r * ldc + j] += tmp[j];
  }
}

template <int... R>
inline void tile_n(int rows, std::integer_sequence<int, R...>, const float* a, const float* b, int64_t kc, float* c,
                   int64_t ldc, int64_t nc) {
  ((rows == R + 1 ? tile<R + 1>(a, b, kc, c, ldc, nc) : void()), ...);
}

// C[M, cols of panels p0..p1) += A[M, K] · B, both packed (pack_a, pack_b); C rows at stride ldc.
inline void gemm_panels(const float* a, const float* packed, int64_t K, int64_t N, float* c, int64_t ldc, int64_t M,
                        int64_t p0, int64_t p1) {
  const int64_t mr = tile_rows(M);
  for (int64_t k0 = 0; k0 < K; k0 += kKc) {
    const int64_t kc = std::min(kKc, K - k0);
    for (int64_t p = p0; p < p1; ++p) {
      const float* b = packed + (p * K + k0) * kNr;
      const int64_t n0 = p * kNr, nc = std::min(kNr, N - n0);
      for (int64_t m = 0; m < M; m += mr) {
        const int rows = static_cast<int>(std::min(mr, M - m));
        tile_n(rows, std::make_integer_sequence<int, kMr>{}, a + m * K + k0 * rows, b, kc, c + m * ldc + n0, ldc, nc);
      }
    }
  }
}

}  // namespace simd
}  // namespace seqtrain

// The recurrent GEMM of the LSTM with the roles of gemm_simd.h swapped (AVX-512 only): C[M, N] += A[M, K]·B[K, N]
// with the batch (M, in tiles of 32 rows) in the vector lanes and the weights broadcast. Each weight element is read
// once per step and feeds two FMAs; in gemm_simd.h the weight panel is read once per row tile (three for
// M = 32). Register tile: kRows (14) columns of C × 2 vectors of 16 rows, or 28 columns × 1 vector where M <= 16:
// 28 of the 32 zmm registers accumulate over all of K, and the tile goes to C through 16×16 in-register
// transposes, so C keeps the [M, N] layout of the gate buffer. The GEMM alone (C++ timing, M = 32, (a)/(c)
// shapes, 2 threads): 1.2–1.26× gemm_simd.h's rate; within the LSTM much less. lstm_cpu.cpp picks one of the
// two per call (with_gemm).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <utility>

namespace seqtrain {
namespace bcast {

constexpr int kRows = 14;  // columns of C (rows of op(B)ᵀ) per register tile

inline int64_t lanes(int64_t m) { return (m + 15) / 16 * 16; }  // A's rows padded to whole vectors
// Columns per register tile: kRows for two vectors of rows, twice that where all of A is one vector (M <= 16).
inline int64_t width(int64_t m) { return lanes(m) == 16 ? 2 * kRows : kRows; }
inline int64_t packed_size(int64_t k, int64_t n) { return k * n; }
inline int64_t packed_a_size(int64_t m, int64_t k) { return lanes(m) * k; }

// Transposes 16 vectors in place: r[i][j] becomes r[j][i].
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j) {
      const __m512d a = _mm512_castps_pd(t[4 * i + j]), b = _mm512_castps_pd(t[4 * i + 2 + j]);
      r[4 * i + 2 * j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[4 * i + 2 * j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
  }
}

// Packs columns [n0, n1) of B[k][n] = src[k * s_k + n * s_n] for a product with M rows of A, in tiles of
// width(M) columns starting at n0 (the last one shorter): the tile at column t holds
// dst[t * K + k * rows + r] = B[k][t + r]. Ranges packed separately must be multiplied with the same n0 and M.
// Vector copies where a tile's row is contiguous (s_n = 1), 16×16 register transposes where its columns are
// (s_k = 1), scalar copies otherwise: the scalar copy of (c)'s 16 MB W_hh took 3–5 ms a call.
inline void pack_b(const float* src, int64_t s_k, int64_t s_n, int64_t K, int64_t M, float* dst, int64_t n0,
                   int64_t n1) {
  const int64_t tw = width(M);
  for (int64_t t = n0; t < n1; t += tw) {
    const int64_t rows = std::min<int64_t>(tw, n1 - t);
    float* d = dst + t * K;
    if (s_n == 1) {
      for (int64_t k = 0; k < K; ++k, d += rows)
        for (int64_t r = 0; r < rows; r += 16) {
          const __mmask16 mask = static_cast<__mmask16>((1u << std::min<int64_t>(16, rows - r)) - 1);
          _mm512_mask_storeu_ps(d + r, mask, _mm512_maskz_loadu_ps(mask, src + k * s_k + t + r));
        }
    } else if (s_k == 1) {
      for (int64_t r0 = 0; r0 < rows; r0 += 16) {
        const int nr = static_cast<int>(std::min<int64_t>(16, rows - r0));
        const __mmask16 out = static_cast<__mmask16>((1u << nr) - 1);
        for (int64_t k = 0; k < K; k += 16) {
          const int nk = static_cast<int>(std::min<int64_t>(16, K - k));
          const __mmask16 in = static_cast<__mmask16>((1u << nk) - 1);
          __m512 v[16];
          for (int i = 0; i < 16; ++i)
            v[i] = i < nr ? _mm512_maskz_loadu_ps(in, src + k + (t + r0 + i) * s_n) : _mm512_setzero_ps();
          transpose16(v);
          for (int j = 0; j < nk; ++j) _mm512_mask_storeu_ps(d + (k + j) * rows + r0, out, v[j]);
        }
      }
    } else {
      for (int64_t k = 0; k < K; ++k, d += rows)
        for (int64_t r = 0; r < rows; ++r) d[r] = src[k * s_k + (t + r) * s_n];
    }
  }
}

// Packs columns [k0, k1) of A [M, K] (row stride lda) transposed: dst[k * lanes(M) + m] = A[m][k], in blocks of
// 16 rows × 16 columns through registers (the scalar copy was 7% of the backward loop at (a)'s sizes). The
// lanes past M are written as zeros.
inline void pack_a(const float* a, int64_t lda, int64_t M, float* dst, int64_t k0, int64_t k1) {
  const int64_t lm = lanes(M);
  for (int64_t m0 = 0; m0 < M; m0 += 16) {
    const int rows = static_cast<int>(std::min<int64_t>(16, M - m0));
    for (int64_t k = k0; k < k1; k += 16) {
      const int cols = static_cast<int>(std::min<int64_t>(16, k1 - k));
      const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(mask, a + (m0 + i) * lda + k) : _mm512_setzero_ps();
      transpose16(r);
      for (int j = 0; j < cols; ++j) _mm512_storeu_ps(dst + (k + j) * lm + m0, r[j]);
    }
  }
}

// C[0:m, 0:R] += A[0:m, :]·tile, A packed by pack_a (lane stride lm) from row 0 of this batch tile, NV vectors;
// out through 16×16 transposes of up to 16 columns each.
template <int R, int NV>
inline void tile(const float* w, const float* a, int64_t K, int64_t lm, float* c, int64_t ldc, int64_t m) {
  __m512 acc[NV][R];
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < K; ++k, w += R, a += lm) {
    __m512 x[NV];
    for (int v = 0; v < NV; ++v) x[v] = _mm512_loadu_ps(a + 16 * v);
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_set1_ps(w[r]);
      for (int v = 0; v < NV; ++v) acc[v][r] = _mm512_fmadd_ps(wv, x[v], acc[v][r]);
    }
  }
  for (int v = 0; v < NV; ++v) {
    const int rows = static_cast<int>(std::min<int64_t>(16, m - 16 * v));
    for (int c0 = 0; c0 < R; c0 += 16) {
      const int cols = std::min(16, R - c0);
      const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
      __m512 t[16];
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) t[r] = r < cols ? acc[v][c0 + r] : _mm512_setzero_ps();
      transpose16(t);
      for (int i = 0; i < rows; ++i) {
        float* cr = c + (16 * v + i) * ldc + c0;
        _mm512_mask_storeu_ps(cr, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, cr), t[i]));
      }
    }
  }
}

template <int NV, int... R>
inline void tile_n(int rows, std::integer_sequence<int, R...>, const float* w, const float* a, int64_t K, int64_t lm,
                   float* c, int64_t ldc, int64_t m) {
  ((rows == R + 1 ? tile<R + 1, NV>(w, a, K, lm, c, ldc, m) : void()), ...);
}

// C[M, n0:n1) += A[M, K]·B[K, n0:n1), A packed by pack_a, B's columns [n0, n1) by pack_b with the same n0 and M.
inline void gemm(const float* a, const float* packed, int64_t K, float* c, int64_t ldc, int64_t M, int64_t n0,
                 int64_t n1) {
  const int64_t lm = lanes(M), tw = width(M);
  for (int64_t m0 = 0; m0 < M; m0 += 32) {
    const int64_t m = std::min<int64_t>(32, M - m0);
    for (int64_t t = n0; t < n1; t += tw) {
      const int rows = static_cast<int>(std::min<int64_t>(tw, n1 - t));
      const float *w = packed + t * K, *x = a + m0;
      float* ct = c + m0 * ldc + t;
      if (m > 16)
        tile_n<2>(rows, std::make_integer_sequence<int, kRows>{}, w, x, K, lm, ct, ldc, m);
      else if (tw == kRows)
        tile_n<1>(rows, std::make_integer_sequence<int, kRows>{}, w, x, K, lm, ct, ldc, m);
      else
        tile_n<1>(rows, std::make_integer_sequence<int, 2 * kRows>{}, w, x, K, lm, ct, ldc, m);
    }
  }
}

}  // namespace bcast
}  // namespace seqtrain

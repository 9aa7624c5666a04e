// AMX (Intel Advanced Matrix Extensions) bf16 GEMM for the LSTM's per-step recurrent products:
// C[M,N] (fp32) += A[M,K]·B[K,N] with A and B in bf16 and the accumulation in fp32 inside the tile registers.
// B (the recurrent weights) is packed once per call into 1 KB tiles in AMX's pair-interleaved (VNNI) layout,
// ordered so that a column tile's K strip is contiguous; each thread owns a fixed set of column tiles, so its
// slice of B (bf16: half the bytes of fp32) stays in its own L2 across time steps. C is read and written in
// place (the gate buffer already holds x·W_ih + b), through a staging tile where M leaves a partial row tile.
// Tiles: 0–3 accumulate C (row tile i, column tile j at 2i + j), 4–5 hold A's row tiles, 6–7 B's column tiles.
#pragma once

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define SEQTRAIN_AMX

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace seqtrain {
namespace amx {

using bf16 = uint16_t;
constexpr int64_t kRows = 16;  // rows of every tile; fp32 columns of a C tile
constexpr int64_t kK = 32;     // bf16 K values per row of an A tile (64 bytes)

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Linux enables AMX state for a process only on request (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
inline bool enable() {
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
}

// Every tile 16 rows × 64 bytes (palette 1). Tile configuration is per thread: load it in each parallel body.
inline void configure() {
  struct alignas(64) {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } cfg{};
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = kRows;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

// 16 fp32 -> 16 bf16, rounded to nearest even (NaN stays NaN).
inline void to_bf16(const float* src, bf16* dst) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src)));
}
inline void to_bf16(const float* src, bf16* dst, int64_t n) {
  alignas(64) float tmp[16] = {};
  std::memcpy(tmp, src, n * sizeof(float));
  alignas(32) bf16 out[16];
  to_bf16(tmp, out);
  std::memcpy(dst, out, n * sizeof(bf16));
}

// B[k][n] = src[k * s_k + n * s_n], [K, N] with N a multiple of 16, packed as tiles: tile (column tile nt,
// K block kb) at dst + (nt * KB + kb) * 512 holds, in row r and column c, the pair B[32kb + 2r + {0, 1}][16nt + c]
// (rows past K are zero). KB = ceil(K / 32).
inline int64_t packed_b_size(int64_t K, int64_t N) { return round_up(K, kK) * N; }
inline void pack_b(const float* src, int64_t s_k, int64_t s_n, int64_t K, int64_t N, bf16* dst, int64_t nt0,
                   int64_t nt1) {
  const int64_t KB = round_up(K, kK) / kK;
  alignas(64) float pair[kRows * 2];
  for (int64_t nt = nt0; nt < nt1; ++nt)
    for (int64_t kb = 0; kb < KB; ++kb) {
      bf16* tile = dst + (nt * KB + kb) * kRows * kK;
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t c = 0; c < kRows; ++c)
          for (int64_t h = 0; h < 2; ++h) {
            const int64_t k = kb * kK + 2 * r + h;
            pair[2 * c + h] = k < K ? src[k * s_k + (nt * kRows + c) * s_n] : 0.f;
          }
        to_bf16(pair, tile + r * kK);
        to_bf16(pair + kRows, tile + r * kK + kRows);
      }
    }
}

// One block of MT row tiles × NT column tiles, all rows valid: C[16i + r][16j + c] += sum_k A[16i + r][k] ·
// B[k][16j + c]. A: bf16 rows of lda elements (K padded to a multiple of 32 with zeros); b: the packed strip of
// the first column tile (the next follows at +KB tiles). The tile intrinsics take their tile numbers as
// literals, so the (at most) 2 × 2 tiles are spelled out.
template <int MT, int NT>
inline void block(const bf16* a, int64_t lda, const bf16* b, int64_t KB, float* c, int64_t ldc) {
  const int64_t ldc_b = ldc * 4;
  float* c1 = c + kRows * ldc;
  _tile_loadd(0, c, ldc_b);
  if constexpr (NT == 2) _tile_loadd(1, c + kRows, ldc_b);
  if constexpr (MT == 2) _tile_loadd(2, c1, ldc_b);
  if constexpr (MT == 2 && NT == 2) _tile_loadd(3, c1 + kRows, ldc_b);
  for (int64_t kb = 0; kb < KB; ++kb) {
    _tile_loadd(4, a + kb * kK, lda * 2);
    if constexpr (MT == 2) _tile_loadd(5, a + kRows * lda + kb * kK, lda * 2);
    _tile_loadd(6, b + kb * kRows * kK, 64);
    if constexpr (NT == 2) _tile_loadd(7, b + (KB + kb) * kRows * kK, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NT == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (MT == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (MT == 2 && NT == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, ldc_b);
  if constexpr (NT == 2) _tile_stored(1, c + kRows, ldc_b);
  if constexpr (MT == 2) _tile_stored(2, c1, ldc_b);
  if constexpr (MT == 2 && NT == 2) _tile_stored(3, c1 + kRows, ldc_b);
}

// The same for the last rows (fewer than 16, or 17–31), one column tile: C goes through a zero-padded staging
// buffer (A's rows are readable up to a multiple of 16: the extra rows only feed the discarded ones).
inline void block_rows(const bf16* a, int64_t lda, const bf16* b, int64_t KB, float* c, int64_t ldc,
                       int64_t rows) {
  alignas(64) float stage[2 * kRows * kRows] = {};
  for (int64_t r = 0; r < rows; ++r) std::memcpy(stage + r * kRows, c + r * ldc, kRows * 4);
  if (rows > kRows) {
    block<2, 1>(a, lda, b, KB, stage, kRows);
  } else {
    block<1, 1>(a, lda, b, KB, stage, kRows);
  }
  for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * ldc, stage + r * kRows, kRows * 4);
}

// C[M, columns of tiles nt0..nt1) += A[M, K]·B, A as for `block` (rows readable up to a multiple of 16), B
// packed by pack_b; the caller has configured the tiles. Column tiles go in pairs, rows in pairs of tiles.
inline void gemm_tiles(const bf16* a, int64_t lda, const bf16* packed, int64_t K, float* c, int64_t ldc, int64_t M,
                       int64_t nt0, int64_t nt1) {
  const int64_t KB = round_up(K, kK) / kK, full = M / (2 * kRows) * (2 * kRows);
  for (int64_t nt = nt0; nt < nt1; nt += 2) {
    const bf16* b = packed + nt * KB * kRows * kK;
    const bool pair = nt + 1 < nt1;
    float* cn = c + nt * kRows;
    for (int64_t m = 0; m < full; m += 2 * kRows) {
      pair ? block<2, 2>(a + m * lda, lda, b, KB, cn + m * ldc, ldc) : block<2, 1>(a + m * lda, lda, b, KB, cn + m * ldc, ldc);
    }
    if (full == M) continue;
    for (int64_t j = 0; j < 1 + pair; ++j)
      block_rows(a + full * lda, lda, b + j * KB * kRows * kK, KB, cn + j * kRows + full * ldc, ldc, M - full);
  }
}

}  // namespace amx
}  // namespace seqtrain

#endif

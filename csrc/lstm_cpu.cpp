// CPU elementwise pass of one LSTM step: SIMD over units, at::parallel_for over (sequence, unit block).
#include <ATen/Parallel.h>

#include "vec_math.h"  // before lstm.h: its templates must see the Vectorized overloads
#include "lstm.h"

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

template void lstm_fwd_cells_cpu<float>(const LstmFwdStep<float>&);
template void lstm_fwd_cells_cpu<double>(const LstmFwdStep<double>&);
template void lstm_bwd_cells_cpu<float>(const LstmBwdStep<float>&);
template void lstm_bwd_cells_cpu<double>(const LstmBwdStep<double>&);

}  // namespace seqtrain

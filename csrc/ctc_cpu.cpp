// CPU CTC kernels: one sequence per task of at::parallel_for; the softmax part of the gradient is SIMD.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>

#include <vector>

#include "vec_math.h"  // before ctc.h: its templates must see the Vectorized overloads
#include "ctc.h"

namespace seqtrain {
namespace {

template <typename T>
void alpha_seq(const CtcArgs<T>& a, int64_t b) {
  const int64_t Tb = a.input_lengths[b], L = 2 * a.target_lengths[b] + 1, Lmax = 2 * a.max_target + 1;
  if (Tb == 0) {
    a.loss[b] = ctc_empty_input_loss<T>(a.target_lengths[b]);
    return;
  }
  const int64_t* tg = a.targets + b * a.max_target;
  T* al = a.alpha + b * a.max_time * Lmax;
  const T* lp = a.log_probs + b * a.classes;
  const int64_t frame = a.batch * a.classes;
  for (int64_t s = 0; s < L; ++s) al[s] = ctc_alpha_init(s, lp[ctc_label(tg, s, a.blank)]);
  for (int64_t t = 1; t < Tb; ++t) {
    T* row = al + t * Lmax;
    const T* lpt = lp + t * frame;
    for (int64_t s = 0; s < L; ++s) row[s] = ctc_alpha_step(row - Lmax, tg, s, lpt[ctc_label(tg, s, a.blank)]);
  }
  a.loss[b] = -ctc_log_likelihood(al + (Tb - 1) * Lmax, L);
}

template <typename T>
void zero_frames(const CtcArgs<T>& a, int64_t b, int64_t from) {
  for (int64_t t = from; t < a.max_time; ++t) std::fill_n(a.grad + (t * a.batch + b) * a.classes, a.classes, T(0));
}

// Beta from the last real frame down, and the gradient of each frame as soon as its beta is known.
template <typename T>
void grad_seq(const CtcArgs<T>& a, int64_t b) {
  const int64_t Tb = a.input_lengths[b], L = 2 * a.target_lengths[b] + 1, Lmax = 2 * a.max_target + 1;
  const T loss = a.loss[b], g = a.grad_out[b];
  if (Tb == 0 || loss == T(INFINITY)) return zero_frames(a, b, 0);  // impossible: zero gradient, not NaN
  zero_frames(a, b, Tb);
  const int64_t* tg = a.targets + b * a.max_target;
  const T* al = a.alpha + b * a.max_time * Lmax;
  const int64_t frame = a.batch * a.classes;
  std::vector<T> beta(2 * L);
  for (int64_t t = Tb - 1; t >= 0; --t) {
    T* cur = beta.data() + (t % 2) * L;
    const T* next = beta.data() + ((t + 1) % 2) * L;
    const T* lpt = a.log_probs + t * frame + b * a.classes;
    for (int64_t s = 0; s < L; ++s)
      cur[s] = t == Tb - 1 ? ctc_beta_init<T>(s, L) : ctc_beta_step(next, lpt + frame, tg, s, L, a.blank);
    T* gt = a.grad + t * frame + b * a.classes;
    using V = at::vec::Vectorized<T>;
    at::vec::map([g](V x) { return st_exp(x) * V(g); }, gt, lpt, a.classes);
    for (int64_t s = 0; s < L; ++s) gt[ctc_label(tg, s, a.blank)] -= g * ctc_occupancy(al[t * Lmax + s], cur[s], loss);
  }
}

}  // namespace

template <typename T>
void ctc_alpha_cpu(const CtcArgs<T>& a) {
  at::parallel_for(0, a.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) alpha_seq(a, b);
  });
}

template <typename T>
void ctc_grad_cpu(const CtcArgs<T>& a) {
  at::parallel_for(0, a.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) grad_seq(a, b);
  });
}

template void ctc_alpha_cpu<float>(const CtcArgs<float>&);
template void ctc_alpha_cpu<double>(const CtcArgs<double>&);
template void ctc_grad_cpu<float>(const CtcArgs<float>&);
template void ctc_grad_cpu<double>(const CtcArgs<double>&);

}  // namespace seqtrain

// CPU CTC kernels: one sequence per task of at::parallel_for, SIMD over the extended labels and the classes.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>

#include <algorithm>
#include <vector>

#include "vec_math.h"  // before ctc.h: its templates must see the Vectorized overloads
#include "ctc.h"

namespace seqtrain {
namespace {

using std::vector;
constexpr int64_t kPad = 2;  // -inf elements around the rows, so the s-1, s-2 (s+1, s+2) reads need no branches

// Applies f(s, n) to s = 0, W, 2W, ... < L, n = lanes in this step (W = SIMD width).
template <typename T, typename F>
void for_lanes(int64_t L, const F& f) {
  constexpr int64_t W = at::vec::Vectorized<T>::size();
  for (int64_t s = 0; s < L; s += W) f(s, static_cast<int>(std::min<int64_t>(W, L - s)));
}

// The class of every extended label l'_s of one sequence, padded with class 0 to whole SIMD vectors, so the
// emissions of a vector of states are one gather.
template <typename T>
vector<at::vec::int_same_size_t<T>> extended_labels(const int64_t* tg, int64_t L, int64_t blank) {
  constexpr int64_t W = at::vec::Vectorized<T>::size();
  vector<at::vec::int_same_size_t<T>> labels(L + W, 0);
  for (int64_t s = 0; s < L; ++s) labels[s] = static_cast<at::vec::int_same_size_t<T>>(ctc_label(tg, s, blank));
  return labels;
}

// lp[l'_s] for the vector of states from s.
template <typename T>
at::vec::Vectorized<T> emissions(const T* lp, const vector<at::vec::int_same_size_t<T>>& labels, int64_t s) {
  using I = at::vec::Vectorized<at::vec::int_same_size_t<T>>;
  return at::vec::gather<sizeof(T)>(lp, I::loadu(labels.data() + s));
}

// Additive skip mask of one sequence, offset kPad: 0 where l'_s may be entered from l'_{s-2}, else -inf.
template <typename T>
vector<T> skip_mask(const int64_t* tg, int64_t L) {
  vector<T> skip(L + 2 * kPad, neg_inf<T>());
  for (int64_t s = 0; s < L; ++s) skip[kPad + s] = ctc_can_skip(tg, s) ? T(0) : neg_inf<T>();
  return skip;
}

// The alpha recursion of ctc.h, SIMD over s: each row from the previous one (padded rows in `prev`, `cur`).
template <typename T>
void alpha_seq(const CtcArgs<T>& a, int64_t b) {
  using V = at::vec::Vectorized<T>;
  using Ln = Lanes<V>;
  const int64_t Tb = a.input_lengths[b], L = 2 * a.target_lengths[b] + 1, Lmax = 2 * a.max_target + 1;
  if (Tb == 0) {
    a.loss[b] = ctc_empty_input_loss<T>(a.target_lengths[b]);
    return;
  }
  const int64_t* tg = a.targets + b * a.max_target;
  T* al = a.alpha + b * a.max_time * Lmax;
  const T* lp = a.log_probs + b * a.classes;
  const int64_t frame = a.batch * a.classes;
  const vector<T> skip = skip_mask<T>(tg, L);
  const auto labels = extended_labels<T>(tg, L, a.blank);
  vector<T> prev(L + 2 * kPad, neg_inf<T>()), cur(prev);
  for (int64_t s = 0; s < L; ++s) al[s] = prev[kPad + s] = ctc_alpha_init(s, lp[labels[s]]);
  for (int64_t t = 1; t < Tb; ++t) {
    const T* lpt = lp + t * frame;
    const T* p = prev.data() + kPad;
    T* row = al + t * Lmax;
    for_lanes<T>(L, [&](int64_t s, int n) {
      const V skipped = Ln::load(p + s - 2, n) + Ln::load(skip.data() + kPad + s, n);
      const V v = log_sum_exp3(Ln::load(p + s, n), Ln::load(p + s - 1, n), skipped) + emissions(lpt, labels, s);
      Ln::store(cur.data() + kPad + s, v, n);
      Ln::store(row + s, v, n);
    });
    std::swap(prev, cur);
  }
  a.loss[b] = -ctc_log_likelihood(al + (Tb - 1) * Lmax, L);
}

template <typename T>
void zero_frames(const CtcArgs<T>& a, int64_t b, int64_t from) {
  for (int64_t t = from; t < a.max_time; ++t) std::fill_n(a.grad + (t * a.batch + b) * a.classes, a.classes, T(0));
}

// Beta from the last real frame down (SIMD over s, as ctc_beta_step), and the gradient of each frame as soon as
// its beta is known: g·softmax (SIMD over classes) minus g·occupancy scattered to the labels.
template <typename T>
void grad_seq(const CtcArgs<T>& a, int64_t b) {
  using V = at::vec::Vectorized<T>;
  using Ln = Lanes<V>;
  const int64_t Tb = a.input_lengths[b], L = 2 * a.target_lengths[b] + 1, Lmax = 2 * a.max_target + 1;
  const T loss = a.loss[b], g = a.grad_out[b];
  if (Tb == 0 || loss == T(INFINITY)) return zero_frames(a, b, 0);  // impossible: zero gradient, not NaN
  zero_frames(a, b, Tb);
  const int64_t* tg = a.targets + b * a.max_target;
  const T* al = a.alpha + b * a.max_time * Lmax;
  const int64_t frame = a.batch * a.classes;
  const vector<T> skip = skip_mask<T>(tg, L);
  const auto labels = extended_labels<T>(tg, L, a.blank);
  vector<T> beta(L), q(L + 2 * kPad, neg_inf<T>()), occ(L);  // q: beta_{t+1}(s) + lp_{t+1}(l'_s), -inf after L
  for (int64_t s = 0; s < L; ++s) beta[s] = ctc_beta_init<T>(s, L);
  for (int64_t t = Tb - 1; t >= 0; --t) {
    const T* lpt = a.log_probs + t * frame + b * a.classes;
    if (t < Tb - 1) {
      for_lanes<T>(L, [&](int64_t s, int n) {
        Ln::store(q.data() + s, Ln::load(beta.data() + s, n) + emissions(lpt + frame, labels, s), n);
      });
      for_lanes<T>(L, [&](int64_t s, int n) {
        const V skipped = Ln::load(q.data() + s + 2, n) + Ln::load(skip.data() + kPad + s + 2, n);
        Ln::store(beta.data() + s, log_sum_exp3(Ln::load(q.data() + s, n), Ln::load(q.data() + s + 1, n), skipped), n);
      });
    }
    for_lanes<T>(L, [&](int64_t s, int n) {
      const V x = Ln::load(al + t * Lmax + s, n) + Ln::load(beta.data() + s, n) + V(loss);
      Ln::store(occ.data() + s, st_exp(x) * V(g), n);  // g·ctc_occupancy, as SIMD
    });
    T* gt = a.grad + t * frame + b * a.classes;
    at::vec::map([g](V x) { return st_exp(x) * V(g); }, gt, lpt, a.classes);
    // Every even state is the blank: one subtraction of their sum; the labels one by one (they may repeat).
    T blank_occ = 0;
    for (int64_t s = 0; s < L; s += 2) blank_occ += occ[s];
    gt[a.blank] -= blank_occ;
    for (int64_t s = 1; s < L; s += 2) gt[tg[s / 2]] -= occ[s];
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

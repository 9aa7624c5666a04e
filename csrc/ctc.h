// CTC recursions shared by ctc_cpu.cpp and ctc_cuda.cu (Graves et al. 2006, "Connectionist Temporal
// Classification", sec. 4.1), in log space over the blank-extended labels l' = (blank, l_1, blank, ..., l_S,
// blank), |l'| = L = 2S+1. alpha_t(s) includes the emission at t, beta_t(s) excludes it, so
// alpha_t(s) + beta_t(s) = log P(paths through s at t) and, with ll = log P(l|x), the gradient w.r.t. the
// logits is directly softmax_t(c) - sum_{s: l'_s = c} exp(alpha_t(s) + beta_t(s) - ll) (eq. 16), with no
// separate log_softmax backward.
#pragma once

#include "common.h"

namespace seqtrain {

// Everything one launch needs; per-sequence pointers are derived from b.
template <typename T>
struct CtcArgs {
  const T* log_probs;        // [T, B, C]
  const int64_t* targets;    // [B, S] padded
  const int64_t* input_lengths;   // [B]
  const int64_t* target_lengths;  // [B]
  T* alpha;                  // [B, T, 2S+1]
  T* loss;                   // [B] -ll, inf where no alignment exists
  const T* grad_out;         // [B] backward only
  T* grad;                   // [T, B, C] backward only
  T* beta;                   // [B, 2, 2S+1] backward scratch (two frames)
  int64_t max_time, batch, classes, max_target, blank;
};

// log(exp(a) + exp(b) + exp(c)) without overflow; all -inf gives -inf, not NaN. V: scalar or SIMD vector.
template <typename V>
SEQTRAIN_HD V log_sum_exp3(const V& a, const V& b, const V& c) {
  const V m = st_finite_or_zero(st_max(st_max(a, b), c));
  return m + st_log(st_exp(a - m) + st_exp(b - m) + st_exp(c - m));
}

SEQTRAIN_HD int64_t ctc_label(const int64_t* targets, int64_t s, int64_t blank) {
  return s % 2 == 0 ? blank : targets[s / 2];
}

// Whether l'_s can be entered from l'_{s-2}, skipping the blank between: only a label that differs from the
// previous label (a repeated label needs the blank in between).
SEQTRAIN_HD bool ctc_can_skip(const int64_t* targets, int64_t s) {
  return s % 2 == 1 && s >= 3 && targets[s / 2] != targets[s / 2 - 1];
}

template <typename T>
SEQTRAIN_HD T ctc_alpha_init(int64_t s, T emit) {
  return s <= 1 ? emit : neg_inf<T>();
}

// alpha_t(s) = lp_t(l'_s) + logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), [alpha_{t-1}(s-2) if skip allowed])
template <typename T>
SEQTRAIN_HD T ctc_alpha_step(const T* prev, const int64_t* targets, int64_t s, T emit) {
  const T none = neg_inf<T>();
  return log_sum_exp3(prev[s], s >= 1 ? prev[s - 1] : none, ctc_can_skip(targets, s) ? prev[s - 2] : none) + emit;
}

// log P(l|x) from the last frame's alpha: paths end in the last label or the final blank.
template <typename T>
SEQTRAIN_HD T ctc_log_likelihood(const T* last, int64_t L) {
  return log_sum_exp3(last[L - 1], L >= 2 ? last[L - 2] : neg_inf<T>(), neg_inf<T>());
}

template <typename T>
SEQTRAIN_HD T ctc_beta_init(int64_t s, int64_t L) {
  return s >= L - 2 ? T(0) : neg_inf<T>();
}

// beta_t(s) = logsumexp over the successors s' in {s, s+1, s+2 if skip allowed} of beta_{t+1}(s') + lp_{t+1}(l'_s')
template <typename T>
SEQTRAIN_HD T ctc_beta_step(const T* next, const T* lp_next, const int64_t* targets, int64_t s, int64_t L,
                            int64_t blank) {
  const T none = neg_inf<T>();
  return log_sum_exp3(next[s] + lp_next[ctc_label(targets, s, blank)],
                      s + 1 < L ? next[s + 1] + lp_next[ctc_label(targets, s + 1, blank)] : none,
                      s + 2 < L && ctc_can_skip(targets, s + 2)
                          ? next[s + 2] + lp_next[ctc_label(targets, s + 2, blank)]
                          : none);
}

// Posterior of being in s at t (Graves eq. 14): exp(alpha_t(s) + beta_t(s) - ll), with loss = -ll.
template <typename T>
SEQTRAIN_HD T ctc_occupancy(T alpha, T beta, T loss) {
  return st_exp(alpha + beta + loss);
}

// Loss of a sequence with no frames: the empty path if there are no labels, else impossible.
template <typename T>
SEQTRAIN_HD T ctc_empty_input_loss(int64_t target_length) {
  return target_length == 0 ? T(0) : T(INFINITY);
}

// Per device: ctc_cpu.cpp, ctc_cuda.cu.
template <typename T>
void ctc_alpha_cpu(const CtcArgs<T>& a);
template <typename T>
void ctc_grad_cpu(const CtcArgs<T>& a);
template <typename T>
void ctc_alpha_cuda(const CtcArgs<T>& a);
template <typename T>
void ctc_grad_cuda(const CtcArgs<T>& a);

}  // namespace seqtrain

// Per-element math shared by the CPU (C++) and CUDA builds, so both devices compute the same function.
// Scalar overloads here; the CPU build adds at::vec::Vectorized overloads (vec_math.h) before the kernels.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SEQTRAIN_HD __host__ __device__ __forceinline__
#else
#define SEQTRAIN_HD inline
#endif

namespace seqtrain {

// C math functions exist on host and device under the same names; std:: overloads do not.
SEQTRAIN_HD float st_exp(float x) { return expf(x); }
SEQTRAIN_HD double st_exp(double x) { return exp(x); }
SEQTRAIN_HD float st_tanh(float x) { return tanhf(x); }
SEQTRAIN_HD double st_tanh(double x) { return tanh(x); }
SEQTRAIN_HD float st_log(float x) { return logf(x); }
template <typename T>
SEQTRAIN_HD T st_recip(T x) {
  return T(1) / x;
}
SEQTRAIN_HD double st_log(double x) { return log(x); }
template <typename T>
SEQTRAIN_HD T st_max(T a, T b) {
  return a > b ? a : b;
}
// x, or 0 where x is -inf (so that x - x stays 0 instead of NaN).
template <typename T>
SEQTRAIN_HD T st_finite_or_zero(T x) {
  return x == T(-INFINITY) ? T(0) : x;
}

template <typename T>
SEQTRAIN_HD T neg_inf() {
  return T(-INFINITY);  // not numeric_limits: that is host-only without --expt-relaxed-constexpr
}

// Loads and stores of `n` consecutive elements as one value V. Scalar here (n is 1); vec_math.h specialises it
// for at::vec::Vectorized, so the same kernel templates run per element (CUDA) or per SIMD vector (CPU).
template <typename V>
struct Lanes {
  template <typename T>
  static SEQTRAIN_HD V load(const T* p, int /*n*/) {
    return *p;
  }
  template <typename T>
  static SEQTRAIN_HD void store(T* p, V v, int /*n*/) {
    *p = v;
  }
};

}  // namespace seqtrain

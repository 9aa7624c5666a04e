// CPU only: the math of common.h for at::vec::Vectorized (SIMD with SLEEF exp/tanh, as ATen's own kernels).
// Include before lstm.h / ctc.h so their templates see these overloads.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include "common.h"

namespace seqtrain {

template <typename T>
inline at::vec::Vectorized<T> st_exp(const at::vec::Vectorized<T>& x) {
  return x.exp();
}
template <typename T>
inline at::vec::Vectorized<T> st_tanh(const at::vec::Vectorized<T>& x) {
  return x.tanh();
}

template <typename T>
inline at::vec::Vectorized<T> st_log(const at::vec::Vectorized<T>& x) {
  return x.log();
}
template <typename T>
inline at::vec::Vectorized<T> st_max(const at::vec::Vectorized<T>& a, const at::vec::Vectorized<T>& b) {
  return at::vec::maximum(a, b);
}
template <typename T>
inline at::vec::Vectorized<T> st_finite_or_zero(const at::vec::Vectorized<T>& x) {
  using V = at::vec::Vectorized<T>;
  return V::blendv(x, V(0), x == V(neg_inf<T>()));
}

template <typename T>
struct Lanes<at::vec::Vectorized<T>> {
  using V = at::vec::Vectorized<T>;
  static V load(const T* p, int n) { return n == V::size() ? V::loadu(p) : V::loadu(p, n); }
  static void store(T* p, const V& v, int n) { v.store(p, n); }
};

}  // namespace seqtrain

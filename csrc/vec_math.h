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

// float: ATen's inline exp_u20 (a polynomial with range reduction, within 20 ulp, about 1e-6 relative; no SLEEF
// call; NaN kept), a reciprocal from the hardware estimate and one Newton step (about 1e-7 relative), and
// tanh(x) = 2 / (1 + exp(-2x)) - 1 from them (absolute error about 1e-7). With SLEEF's 1-ulp functions and
// divisions the LSTM cell's five transcendentals per unit took longer than the step's recurrent GEMM.
// double keeps SLEEF and true division (gradcheck and the reference comparisons run in float64).
using Vf = at::vec::Vectorized<float>;
inline Vf st_exp(const Vf& x) { return Vf::blendv(x.exp_u20(), x, x.isnan()); }
inline Vf st_recip(const Vf& d_in) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 d = _mm512_min_ps(_mm512_set1_ps(1e30f), d_in), r = _mm512_rcp14_ps(d);  // min keeps NaN
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256 d = _mm256_min_ps(_mm256_set1_ps(1e30f), d_in), r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.f)));
#else
  return Vf(1) / d_in;
#endif
}
inline Vf st_tanh(const Vf& x) { return Vf(2) * st_recip(Vf(1) + st_exp(x * Vf(-2))) - Vf(1); }

template <typename T>
inline at::vec::Vectorized<T> st_recip(const at::vec::Vectorized<T>& x) {
  return at::vec::Vectorized<T>(1) / x;
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

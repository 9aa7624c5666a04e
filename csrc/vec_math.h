// CPU only: the math of common.h for at::vec::Vectorized (SIMD with SLEEF exp/tanh, as ATen's own kernels).
// Include before lstm.h / ctc.h so their templates see these overloads.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <limits>

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

// float: an inline polynomial exp (below; AVX2: ATen's exp_u20, within 20 ulp), a reciprocal from the hardware
// estimate and one Newton step (about 1e-7 relative), and tanh(x) = 2 / (1 + exp(-2x)) - 1 from them (absolute
// error about 1e-7). With SLEEF's 1-ulp functions and divisions the LSTM cell's five transcendentals per unit
// took longer than the step's recurrent GEMM. double keeps SLEEF and true division (gradcheck and the
// reference comparisons run in float64).
using Vf = at::vec::Vectorized<float>;
#if defined(CPU_CAPABILITY_AVX512)
// exp(x) = 2^n · e^r, n = round(x / ln 2), r = x - n·ln 2 (ln 2 in two parts), e^r by Cephes' degree-6
// polynomial, 2^n applied by vscalefps (no exponent-bit arithmetic or range masks): within 1.2e-7 relative for
// results in the normal range, 0 below it (a denormal would be slow in every later operation), inf above,
// NaN kept. Against exp_u20 the CTC loss+gradient ran 6–15% faster (benchmarks/kernels.py's sizes).
inline Vf st_exp(const Vf& x_in) {
  const __m512 x = _mm512_min_ps(_mm512_set1_ps(100.f), x_in);  // keeps r finite for +inf; NaN stays
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), kNearest);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  // "not less than ln(FLT_MIN)" is also true for NaN, so NaN is not zeroed
  return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33f), _CMP_NLT_UQ), p, n);
}
#else
inline Vf st_exp(const Vf& x) { return Vf::blendv(x.exp_u20(), x, x.isnan()); }
#endif
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

// log: x = 2^k * m with m in [sqrt(1/2), sqrt(2)) split off by integer arithmetic on the bits, then
// log(m) = f - f^2/2 + f^3 * P(f), f = m - 1, with Cephes' degree-8 minimax P (about 1 ulp relative); 0 gives
// -inf, +inf and NaN pass through, negatives give NaN. (SLEEF's call was the CTC recursion's largest cost.)
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
inline Vf st_log(const Vf& x) {
  constexpr int32_t kSqrtHalf = 0x3f3504f3;  // bits of sqrt(1/2)
#if defined(CPU_CAPABILITY_AVX512)
  const __m512i ix = _mm512_sub_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(kSqrtHalf));
  const Vf k(_mm512_cvtepi32_ps(_mm512_srai_epi32(ix, 23)));
  const __m512i mant = _mm512_add_epi32(_mm512_and_si512(ix, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(kSqrtHalf));
  const Vf f = Vf(_mm512_castsi512_ps(mant)) - Vf(1);
#else
  const __m256i ix = _mm256_sub_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(kSqrtHalf));
  const Vf k(_mm256_cvtepi32_ps(_mm256_srai_epi32(ix, 23)));
  const __m256i mant = _mm256_add_epi32(_mm256_and_si256(ix, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(kSqrtHalf));
  const Vf f = Vf(_mm256_castsi256_ps(mant)) - Vf(1);
#endif
  using at::vec::fmadd;
  Vf p(7.0376836292e-2f);
  for (const float c : {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f,
                        -1.6668057665e-1f, 2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f})
    p = fmadd(p, f, Vf(c));
  const Vf z = f * f;
  Vf r = fmadd(p * f, z, fmadd(z, Vf(-0.5f), f));
  r = fmadd(k, Vf(-2.12194440e-4f), r);  // k * log(2), in two parts for accuracy
  r = fmadd(k, Vf(0.693359375f), r);
  r = Vf::blendv(x, r, x < Vf(std::numeric_limits<float>::infinity()));  // +inf and NaN stay
  r = Vf::blendv(r, Vf(std::numeric_limits<float>::quiet_NaN()), x < Vf(0));
  return Vf::blendv(r, Vf(-std::numeric_limits<float>::infinity()), x == Vf(0));
}
#endif

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

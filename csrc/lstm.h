// LSTM cell math and per-step kernel interface, shared by lstm_cpu.cpp and lstm_cuda.cu.
// Design of RETURNN's NativeLstm2: the input projection x·W_ih^T for all frames is one GEMM outside the
// loop; per step, one GEMM adds h_prev·W_hh^T into the gate buffer and one fused elementwise pass (here)
// adds the bias and applies the gates. (The bias here, not in the projection: addmm's broadcast of the bias
// into the [T, B, 4H] output cost as much as the whole GEMM on CPU when the input is narrow.)
// Gate order i, f, g, o as torch.nn.LSTM, so its parameters convert with b = b_ih + b_hh.
#pragma once

#include "common.h"

namespace seqtrain {

template <typename V>
SEQTRAIN_HD V sigmoid(const V& x) {
  return st_recip(V(1) + st_exp(V(0) - x));
}

// In: pre-activations a_* and c_prev. Out: activations in a_*, cell c and output h.
//   i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o), c = f·c_prev + i·g, h = o·tanh(c)
template <typename V>
SEQTRAIN_HD void lstm_cell_forward(V& a_i, V& a_f, V& a_g, V& a_o, const V& c_prev, V& c, V& h) {
  a_i = sigmoid(a_i);
  a_f = sigmoid(a_f);
  a_g = st_tanh(a_g);
  a_o = sigmoid(a_o);
  c = a_f * c_prev + a_i * a_g;
  h = a_o * st_tanh(c);
}

// Gradients of the pre-activations and of c_prev, from the saved activations (i, f, g, o), c_prev, c and the
// gradients dh, dc arriving at h and c (from the output, the next step and the final state).
template <typename V>
SEQTRAIN_HD void lstm_cell_backward(const V& i, const V& f, const V& g, const V& o, const V& c_prev,
                                    const V& c, const V& dh, const V& dc, V& d_i, V& d_f, V& d_g, V& d_o,
                                    V& dc_prev) {
  V tc = st_tanh(c);
  V dc_total = dc + dh * o * (V(1) - tc * tc);
  d_o = dh * tc * o * (V(1) - o);
  d_i = dc_total * g * i * (V(1) - i);
  d_f = dc_total * c_prev * f * (V(1) - f);
  d_g = dc_total * i * (V(1) - g * g);
  dc_prev = dc_total * f;
}

// Frame t processed at loop step `step`, and where the state before (prev) and after (cur) it lives in the
// [T+1] state buffers: forward, state k follows frame k-1 (0 = initial); backward, state k follows frame k
// (T = initial). Backward runs each sequence from its own last real frame because padded frames (t >= len)
// come first and only pass the initial state through.
struct Frame {
  int64_t t, prev, cur;
};

SEQTRAIN_HD Frame frame_at(int64_t step, int64_t T, int64_t direction) {
  if (direction > 0) return {step, step, step + 1};
  const int64_t t = T - 1 - step;
  return {t, t + 1, t};
}

// One time step t of the forward pass; all buffers contiguous, rows are sequences.
template <typename T>
struct LstmFwdStep {
  T* gates;              // [B, 4H] in: x·W_ih^T + h_prev·W_hh^T; out: activations (valid rows)
  const T* bias;         // [4H]
  const T* h_prev;       // [B, H]
  const T* c_prev;       // [B, H]
  T* h;                  // [B, H] state after t (carried from h_prev on padded frames)
  T* c;                  // [B, H]
  T* y;                  // [B, H] output at t (zero on padded frames)
  const int64_t* seq_lens;  // [B]
  int64_t t, B, H;
};

// One time step t of the backward pass.
template <typename T>
struct LstmBwdStep {
  const T* acts;    // [B, 4H] activations saved by the forward pass
  const T* c_prev;  // [B, H]
  const T* c;       // [B, H]
  const T* dy;      // [B, H]
  T* dh;            // [B, H] in: gradient carried to h; out: zero on valid rows (the GEMM adds d_gates·W_hh)
  T* dc;            // [B, H] in/out: gradient carried to c
  T* d_gates;       // [B, 4H] out: gradients of the pre-activations (zero on padded frames)
  const int64_t* seq_lens;
  int64_t t, B, H;
};

// Elements j .. j+n-1 of sequence b, as one value V (a scalar, or a SIMD vector of n lanes).
template <typename V, typename T>
SEQTRAIN_HD void lstm_fwd_span(const LstmFwdStep<T>& s, int64_t b, int64_t j, int n) {
  using L = Lanes<V>;
  const int64_t H = s.H, k = b * H + j;
  if (s.t >= s.seq_lens[b]) {  // padded frame: the state passes through, so the final state is the last real one
    L::store(s.h + k, L::load(s.h_prev + k, n), n);
    L::store(s.c + k, L::load(s.c_prev + k, n), n);
    L::store(s.y + k, V(0), n);
    return;
  }
  T* a = s.gates + b * 4 * H + j;
  const T* bias = s.bias + j;
  V a_i = L::load(a, n) + L::load(bias, n), a_f = L::load(a + H, n) + L::load(bias + H, n);
  V a_g = L::load(a + 2 * H, n) + L::load(bias + 2 * H, n), a_o = L::load(a + 3 * H, n) + L::load(bias + 3 * H, n);
  V c, h;
  lstm_cell_forward(a_i, a_f, a_g, a_o, L::load(s.c_prev + k, n), c, h);
  L::store(a, a_i, n);
  L::store(a + H, a_f, n);
  L::store(a + 2 * H, a_g, n);
  L::store(a + 3 * H, a_o, n);
  L::store(s.c + k, c, n);
  L::store(s.h + k, h, n);
  L::store(s.y + k, h, n);
}

template <typename V, typename T>
SEQTRAIN_HD void lstm_bwd_span(const LstmBwdStep<T>& s, int64_t b, int64_t j, int n) {
  using L = Lanes<V>;
  const int64_t H = s.H, k = b * H + j;
  T* d = s.d_gates + b * 4 * H + j;
  if (s.t >= s.seq_lens[b]) {  // padded frame: y is constant zero, dh and dc pass through unchanged
    for (int q = 0; q < 4; ++q) L::store(d + q * H, V(0), n);
    return;
  }
  const T* a = s.acts + b * 4 * H + j;
  V dh = L::load(s.dh + k, n) + L::load(s.dy + k, n);
  V d_i, d_f, d_g, d_o, dc_prev;
  lstm_cell_backward(L::load(a, n), L::load(a + H, n), L::load(a + 2 * H, n), L::load(a + 3 * H, n),
                     L::load(s.c_prev + k, n), L::load(s.c + k, n), dh, L::load(s.dc + k, n), d_i, d_f, d_g,
                     d_o, dc_prev);
  L::store(d, d_i, n);
  L::store(d + H, d_f, n);
  L::store(d + 2 * H, d_g, n);
  L::store(d + 3 * H, d_o, n);
  L::store(s.dc + k, dc_prev, n);
  L::store(s.dh + k, V(0), n);
}

#ifndef __CUDACC__
// CPU: fetches the next step's gate pre-activations of units j.. of sequence b into L2 while this step's cells
// run. The gate buffer of all frames (written by the input projection before the loop) is far larger than
// the caches, and the next step's recurrent GEMM would otherwise wait on memory for it.
inline void prefetch_gates(const float* next_gates, int64_t b, int64_t j, int64_t H) {
  if (next_gates == nullptr) return;
  for (int64_t q = 0; q < 4; ++q) __builtin_prefetch(next_gates + b * 4 * H + q * H + j, 0, 2);
}
#endif

// All buffers of one call, as lstm.cpp lays them out (see frame_at): gates/acts and d_gates [T, B, 4H],
// hs and cs [T+1, B, H], y and dy [T, B, H], the carried gradients dh and dc [B, H].
struct LstmFwdLoop {
  float *gates, *hs, *cs, *y;
  const float *w_hh, *bias;  // [4H, H], [4H]
  const int64_t* seq_lens;
  int64_t T, B, H, direction;
};
struct LstmBwdLoop {
  const float *acts, *cs, *dy;
  float *dh, *dc, *d_gates;
  const float* w_hh;
  const int64_t* seq_lens;
  int64_t T, B, H, direction;
};

// Loop step `step` of a call: the step's view of the loop's buffers (frame_at gives its frame and states).
inline LstmFwdStep<float> fwd_step(const LstmFwdLoop& L, int64_t step) {
  const Frame f = frame_at(step, L.T, L.direction);
  const int64_t BH = L.B * L.H;
  return {L.gates + f.t * 4 * BH, L.bias, L.hs + f.prev * BH, L.cs + f.prev * BH, L.hs + f.cur * BH,
          L.cs + f.cur * BH,      L.y + f.t * BH, L.seq_lens, f.t, L.B, L.H};
}
inline LstmBwdStep<float> bwd_step(const LstmBwdLoop& L, int64_t step) {
  const Frame f = frame_at(step, L.T, L.direction);
  const int64_t BH = L.B * L.H;
  return {L.acts + f.t * 4 * BH, L.cs + f.prev * BH, L.cs + f.cur * BH, L.dy + f.t * BH, L.dh,
          L.dc,                  L.d_gates + f.t * 4 * BH, L.seq_lens,  f.t,              L.B,
          L.H};
}
// The gate buffer of the step after `step` (forward), for prefetch_gates; null after the last.
inline const float* next_gates(const LstmFwdLoop& L, int64_t step) {
  return step + 1 < L.T ? L.gates + frame_at(step + 1, L.T, L.direction).t * 4 * L.B * L.H : nullptr;
}

// The whole time loop on CPU with the recurrent GEMM and the cell pass fused per thread (lstm_cpu.cpp).
// False where that path does not apply (no AVX2/FMA build, H not a multiple of 16); the caller then runs the
// generic per-step loop.
bool lstm_fwd_loop_cpu(const LstmFwdLoop& loop);
bool lstm_bwd_loop_cpu(const LstmBwdLoop& loop);

// The same loops with the recurrent GEMM in bf16 on AMX, fp32 accumulation (lstm_amx.cpp). False where that
// does not apply (no AMX build, the CPU or OS without AMX, H not a multiple of 16).
bool lstm_amx_available();
// gates [rows, 4H] += x [rows, in] · W_ih^T with bf16 operands, fp32 accumulation.
bool lstm_projection_amx(const float* x, const float* w_ih, int64_t rows, int64_t in, int64_t H, float* gates);
bool lstm_fwd_loop_amx(const LstmFwdLoop& loop);
bool lstm_bwd_loop_amx(const LstmBwdLoop& loop);

// The fused elementwise pass of one step over all B×H elements, per device (lstm_cpu.cpp, lstm_cuda.cu).
template <typename T>
void lstm_fwd_cells_cpu(const LstmFwdStep<T>& s);
template <typename T>
void lstm_bwd_cells_cpu(const LstmBwdStep<T>& s);
template <typename T>
void lstm_fwd_cells_cuda(const LstmFwdStep<T>& s);
template <typename T>
void lstm_bwd_cells_cuda(const LstmBwdStep<T>& s);

}  // namespace seqtrain

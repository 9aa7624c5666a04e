// Host entry points of the native ops (bound to Python in bindings.cpp). Tensors on CPU or CUDA, float or double.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace seqtrain {

// Returns {y [T,B,H], hs [T+1,B,H], cs [T+1,B,H], acts [T,B,4H]}; hs/cs hold the state around every frame
// (see frame_at in lstm.cpp), acts the gate activations, both kept for lstm_backward. bf16: every GEMM takes
// bf16 operands (float32 x and weights, rounded), the state and the accumulation stay float32 (CPU with AMX).
std::vector<at::Tensor> lstm_forward(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const at::Tensor& bias, const at::Tensor& h0, const at::Tensor& c0,
                                     const at::Tensor& seq_lens, int64_t direction, bool bf16, bool poison);

// Returns {dx, dw_ih, dw_hh, dbias, dh0, dc0}; dx undefined (None) unless need_dx.
std::vector<at::Tensor> lstm_backward(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                      const at::Tensor& seq_lens, const at::Tensor& hs, const at::Tensor& cs,
                                      const at::Tensor& acts, const at::Tensor& dy, const at::Tensor& dh_n,
                                      const at::Tensor& dc_n, int64_t direction, bool bf16, bool need_dx,
                                      bool poison);

// lstm_forward / lstm_backward of independent calls (a BLSTM layer's directions; pieces of stacked layers), each
// with its own lengths, one result list after the other (4 / 6 tensors per call); concurrently, one thread
// each, where lstm_group_concurrent (no more threads than calls, CPU), else one after the other.
std::vector<at::Tensor> lstm_forward_group(const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& w_ihs,
                                           const std::vector<at::Tensor>& w_hhs,
                                           const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& h0s,
                                           const std::vector<at::Tensor>& c0s, const std::vector<at::Tensor>& seq_lens,
                                           const std::vector<int64_t>& directions, bool bf16, bool poison);
std::vector<at::Tensor> lstm_backward_group(
    const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& w_ihs, const std::vector<at::Tensor>& w_hhs,
    const std::vector<at::Tensor>& seq_lens, const std::vector<at::Tensor>& hss, const std::vector<at::Tensor>& css,
    const std::vector<at::Tensor>& actss, const std::vector<at::Tensor>& dys, const std::vector<at::Tensor>& dh_ns,
    const std::vector<at::Tensor>& dc_ns, const std::vector<int64_t>& directions, bool bf16,
    const std::vector<bool>& need_dxs, bool poison);
bool lstm_group_concurrent(int64_t calls, bool cuda);

// Whether lstm_forward/backward can run with bf16 = true here (an AMX build on a CPU and OS that allow it).
bool lstm_bf16_available();

// Returns {loss [B] (inf where no alignment exists), log_probs [T,B,C], alpha [B,T,2S+1]}.
std::vector<at::Tensor> ctc_forward(const at::Tensor& logits, const at::Tensor& targets,
                                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                    int64_t blank, bool poison);

// Returns d(sum_b grad_out[b]·loss[b]) / d logits, zero for impossible sequences and padded frames.
at::Tensor ctc_backward(const at::Tensor& grad_out, const at::Tensor& log_probs, const at::Tensor& alpha,
                        const at::Tensor& loss, const at::Tensor& targets, const at::Tensor& input_lengths,
                        const at::Tensor& target_lengths, int64_t blank, bool poison);

}  // namespace seqtrain

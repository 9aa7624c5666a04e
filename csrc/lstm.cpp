// LSTM over a padded batch, device-agnostic host side: GEMMs through ATen (MKL/oneDNN on CPU, cuBLAS on CUDA),
// the fused elementwise pass per step through lstm_cpu.cpp / lstm_cuda.cu. Design: RETURNN NativeLstm2.
#include <limits>

#include "lstm.h"
#include "ops.h"

namespace seqtrain {
namespace {

template <typename T>
void fwd_cells(const LstmFwdStep<T>& s, bool cuda) {
#ifdef SEQTRAIN_WITH_CUDA
  if (cuda) return lstm_fwd_cells_cuda(s);
#else
  TORCH_CHECK(!cuda, "seqtrain ops were built without CUDA; rebuild where torch.cuda.is_available()");
#endif
  lstm_fwd_cells_cpu(s);
}

template <typename T>
void bwd_cells(const LstmBwdStep<T>& s, bool cuda) {
#ifdef SEQTRAIN_WITH_CUDA
  if (cuda) return lstm_bwd_cells_cuda(s);
#else
  TORCH_CHECK(!cuda, "seqtrain ops were built without CUDA; rebuild where torch.cuda.is_available()");
#endif
  lstm_bwd_cells_cpu(s);
}

void poison_if(at::Tensor& t, bool poison) {
  if (poison) t.fill_(std::numeric_limits<double>::quiet_NaN());
}

void check_lstm_args(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& bias,
                     const at::Tensor& seq_lens, int64_t direction) {
  TORCH_CHECK(x.dim() == 3, "lstm: x must be [T, B, in], got ", x.sizes());
  const int64_t H = w_hh.size(1);
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) == 4 * H && w_ih.size(1) == x.size(2),
              "lstm: weight_ih must be [4H, in] = [", 4 * H, ", ", x.size(2), "], got ", w_ih.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == 4 * H, "lstm: weight_hh must be [4H, H], got ", w_hh.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == 4 * H, "lstm: bias must be [4H], got ", bias.sizes());
  TORCH_CHECK(seq_lens.dim() == 1 && seq_lens.size(0) == x.size(1), "lstm: seq_lens must be [B]");
  TORCH_CHECK(direction == 1 || direction == -1, "lstm: direction must be 1 or -1, got ", direction);
  for (const auto* t : {&w_ih, &w_hh, &bias})
    TORCH_CHECK(t->scalar_type() == x.scalar_type() && t->device() == x.device(),
                "lstm: parameters must have the dtype and device of x");
}

void check_bf16(const at::Tensor& x, int64_t H) {
  TORCH_CHECK(!x.is_cuda() && x.scalar_type() == at::kFloat && lstm_amx_available() && H % 16 == 0,
              "lstm: bf16 GEMMs need float32 inputs on a CPU with AMX and a hidden size that is a multiple of 16 "
              "(see seqtrain.ops.lstm_bf16_available)");
}

}  // namespace

bool lstm_bf16_available() { return lstm_amx_available(); }

std::vector<at::Tensor> lstm_forward(const at::Tensor& x_in, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const at::Tensor& bias, const at::Tensor& h0, const at::Tensor& c0,
                                     const at::Tensor& seq_lens, int64_t direction, bool bf16, bool poison) {
  check_lstm_args(x_in, w_ih, w_hh, bias, seq_lens, direction);
  const at::Tensor x = x_in.contiguous();
  const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
  if (bf16) check_bf16(x, H);
  const at::Tensor lens = seq_lens.to(x.device(), at::kLong).contiguous();
  // The input projection of all frames in one GEMM; the loop then adds h_prev·W_hh^T in place (and the bias).
  at::Tensor gates;
  if (bf16) {
    gates = at::zeros({T, B, 4 * H}, x.options());
    const at::Tensor w_ih_c = w_ih.contiguous();
    TORCH_CHECK(lstm_projection_amx(x.data_ptr<float>(), w_ih_c.data_ptr<float>(), T * B, x.size(2), H,
                                    gates.data_ptr<float>()),
                "lstm: the AMX input projection did not run");
  } else {
    gates = at::mm(x.reshape({T * B, x.size(2)}), w_ih.t()).view({T, B, 4 * H});
  }
  at::Tensor hs = at::empty({T + 1, B, H}, x.options()), cs = at::empty_like(hs), y = at::empty({T, B, H}, x.options());
  poison_if(hs, poison);
  poison_if(cs, poison);
  poison_if(y, poison);
  const int64_t init = direction > 0 ? 0 : T;
  hs.select(0, init).copy_(h0);
  cs.select(0, init).copy_(c0);
  const bool cuda = x.is_cuda();
  const at::Tensor w_hh_c = w_hh.contiguous(), bias_c = bias.contiguous();
  if (!cuda && x.scalar_type() == at::kFloat) {
    const LstmFwdLoop loop{gates.data_ptr<float>(),  hs.data_ptr<float>(),     cs.data_ptr<float>(),
                           y.data_ptr<float>(),      w_hh_c.data_ptr<float>(), bias_c.data_ptr<float>(),
                           lens.data_ptr<int64_t>(), T,                        B,
                           H,                        direction};
    if (bf16 ? lstm_fwd_loop_amx(loop) : lstm_fwd_loop_cpu(loop)) return {y, hs, cs, gates};
  }
  const at::Tensor w_hh_t = w_hh.t();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqtrain_lstm_forward", [&] {
    scalar_t *g0 = gates.data_ptr<scalar_t>(), *h = hs.data_ptr<scalar_t>(), *c = cs.data_ptr<scalar_t>();
    for (int64_t step = 0; step < T; ++step) {
      const Frame f = frame_at(step, T, direction);
      gates.select(0, f.t).addmm_(hs.select(0, f.prev), w_hh_t);
      fwd_cells(LstmFwdStep<scalar_t>{g0 + f.t * B * 4 * H, bias_c.data_ptr<scalar_t>(), h + f.prev * B * H,
                                      c + f.prev * B * H, h + f.cur * B * H, c + f.cur * B * H,
                                      y.data_ptr<scalar_t>() + f.t * B * H, lens.data_ptr<int64_t>(), f.t, B, H},
                cuda);
    }
  });
  return {y, hs, cs, gates};
}

std::vector<at::Tensor> lstm_backward(const at::Tensor& x_in, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                      const at::Tensor& seq_lens, const at::Tensor& hs, const at::Tensor& cs,
                                      const at::Tensor& acts, const at::Tensor& dy_in, const at::Tensor& dh_n,
                                      const at::Tensor& dc_n, int64_t direction, bool bf16, bool need_dx,
                                      bool poison) {
  const at::Tensor x = x_in.contiguous(), dy = dy_in.contiguous();
  const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
  if (bf16) check_bf16(x, H);
  const at::Tensor lens = seq_lens.to(x.device(), at::kLong).contiguous();
  at::Tensor d_gates = at::empty({T, B, 4 * H}, x.options());
  poison_if(d_gates, poison);
  at::Tensor dh = dh_n.contiguous().clone(), dc = dc_n.contiguous().clone();
  const bool cuda = x.is_cuda();
  const at::Tensor w_hh_c = w_hh.contiguous(), acts_c = acts.contiguous(), cs_c = cs.contiguous();
  bool fused = false;
  if (!cuda && x.scalar_type() == at::kFloat) {
    const LstmBwdLoop loop{acts_c.data_ptr<float>(),  cs_c.data_ptr<float>(),     dy.data_ptr<float>(),
                           dh.data_ptr<float>(),      dc.data_ptr<float>(),       d_gates.data_ptr<float>(),
                           w_hh_c.data_ptr<float>(),  lens.data_ptr<int64_t>(),   T, B, H, direction};
    fused = bf16 ? lstm_bwd_loop_amx(loop) : lstm_bwd_loop_cpu(loop);
  }
  if (!fused) AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqtrain_lstm_backward", [&] {
    const scalar_t *a = acts.data_ptr<scalar_t>(), *c = cs.data_ptr<scalar_t>();
    for (int64_t step = T - 1; step >= 0; --step) {
      const Frame f = frame_at(step, T, direction);
      bwd_cells(LstmBwdStep<scalar_t>{a + f.t * B * 4 * H, c + f.prev * B * H, c + f.cur * B * H,
                                      dy.data_ptr<scalar_t>() + f.t * B * H, dh.data_ptr<scalar_t>(),
                                      dc.data_ptr<scalar_t>(), d_gates.data_ptr<scalar_t>() + f.t * B * 4 * H,
                                      lens.data_ptr<int64_t>(), f.t, B, H},
                cuda);
      dh.addmm_(d_gates.select(0, f.t), w_hh);
    }
  });
  const at::Tensor dg = d_gates.view({T * B, 4 * H});
  const at::Tensor h_prev = hs.narrow(0, direction > 0 ? 0 : 1, T);  // the state each frame started from
  const int64_t in = x.size(2);
  const at::Tensor g = bf16 ? dg.to(at::kBFloat16) : dg;  // bf16: the GEMMs through oneDNN (AMX), rounded once
  const auto mm = [bf16](const at::Tensor& a, const at::Tensor& b) {
    return bf16 ? at::mm(a, b.to(at::kBFloat16)).to(at::kFloat) : at::mm(a, b);
  };
  const at::Tensor dx = need_dx ? mm(g, w_ih).view({T, B, in}) : at::Tensor();
  // The recurrent-weight gradient is one GEMM over all frames. A narrow input's weight and bias gradients join
  // it, as dg^T · [h_prev | x | 1]: on their own they are products that read all of the 4H-wide dg for little
  // work ((a) of benchmarks/kernels.py: 56–60 ms joined, 60–88 ms apart; at in >= H/2 no gain).
  // (bf16: no column of ones, the bias gradient stays a float32 sum.)
  if (4 * in <= H) {
    const int64_t ones = bf16 ? 0 : 1;
    at::Tensor rhs = at::empty({T, B, H + in + ones}, x.options());
    rhs.narrow(2, 0, H).copy_(h_prev);
    rhs.narrow(2, H, in).copy_(x);
    if (ones) rhs.select(2, H + in).fill_(1);
    const at::Tensor dw = mm(g.t(), rhs.view({T * B, H + in + ones}));
    const at::Tensor d_bias = ones ? dw.select(1, H + in).contiguous() : dg.sum(0);
    return {dx, dw.narrow(1, H, in).contiguous(), dw.narrow(1, 0, H).contiguous(), d_bias, dh, dc};
  }
  const at::Tensor g_t = g.t();
  return {dx, mm(g_t, x.view({T * B, in})), mm(g_t, h_prev.reshape({T * B, H})), dg.sum(0), dh, dc};
}

}  // namespace seqtrain

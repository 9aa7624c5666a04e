// CTC loss over a padded batch, device-agnostic host side: log_softmax through ATen, the alpha (forward) and
// beta+gradient (backward) recursions through ctc_cpu.cpp / ctc_cuda.cu.
#include <limits>

#include "ctc.h"
#include "ops.h"

namespace seqtrain {
namespace {

template <typename T>
void alpha_on(const CtcArgs<T>& a, bool cuda) {
#ifdef SEQTRAIN_WITH_CUDA
  if (cuda) return ctc_alpha_cuda(a);
#else
  TORCH_CHECK(!cuda, "seqtrain ops were built without CUDA; rebuild where torch.cuda.is_available()");
#endif
  ctc_alpha_cpu(a);
}

template <typename T>
void grad_on(const CtcArgs<T>& a, bool cuda) {
#ifdef SEQTRAIN_WITH_CUDA
  if (cuda) return ctc_grad_cuda(a);
#else
  TORCH_CHECK(!cuda, "seqtrain ops were built without CUDA; rebuild where torch.cuda.is_available()");
#endif
  ctc_grad_cpu(a);
}

void poison_if(at::Tensor& t, bool poison) {
  if (poison) t.fill_(std::numeric_limits<double>::quiet_NaN());
}

at::Tensor as_index(const at::Tensor& t, const at::Tensor& like) {
  return t.to(like.device(), at::kLong).contiguous();
}

// Pointers common to both passes; the pass-specific ones are filled in by the caller.
template <typename T>
CtcArgs<T> make_args(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& in_lens,
                     const at::Tensor& tgt_lens, int64_t blank) {
  CtcArgs<T> a{};
  a.log_probs = log_probs.data_ptr<T>();
  a.targets = targets.data_ptr<int64_t>();
  a.input_lengths = in_lens.data_ptr<int64_t>();
  a.target_lengths = tgt_lens.data_ptr<int64_t>();
  a.max_time = log_probs.size(0);
  a.batch = log_probs.size(1);
  a.classes = log_probs.size(2);
  a.max_target = targets.size(1);
  a.blank = blank;
  return a;
}

}  // namespace

std::vector<at::Tensor> ctc_forward(const at::Tensor& logits, const at::Tensor& targets_in,
                                    const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                    int64_t blank, bool poison) {
  TORCH_CHECK(logits.dim() == 3, "ctc: logits must be [T, B, C], got ", logits.sizes());
  TORCH_CHECK(targets_in.dim() == 2 && targets_in.size(0) == logits.size(1), "ctc: targets must be [B, S]");
  const at::Tensor log_probs = at::log_softmax(logits, 2).contiguous();
  const at::Tensor targets = as_index(targets_in, logits), in_lens = as_index(input_lengths, logits),
                   tgt_lens = as_index(target_lengths, logits);
  const int64_t T = logits.size(0), B = logits.size(1), S = targets.size(1);
  at::Tensor alpha = at::empty({B, T, 2 * S + 1}, logits.options()), loss = at::empty({B}, logits.options());
  poison_if(alpha, poison);
  poison_if(loss, poison);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "seqtrain_ctc_forward", [&] {
    auto a = make_args<scalar_t>(log_probs, targets, in_lens, tgt_lens, blank);
    a.alpha = alpha.data_ptr<scalar_t>();
    a.loss = loss.data_ptr<scalar_t>();
    alpha_on(a, logits.is_cuda());
  });
  return {loss, log_probs, alpha};
}

at::Tensor ctc_backward(const at::Tensor& grad_out, const at::Tensor& log_probs, const at::Tensor& alpha,
                        const at::Tensor& loss, const at::Tensor& targets_in, const at::Tensor& input_lengths,
                        const at::Tensor& target_lengths, int64_t blank, bool poison) {
  const at::Tensor targets = as_index(targets_in, log_probs), in_lens = as_index(input_lengths, log_probs),
                   tgt_lens = as_index(target_lengths, log_probs), g = grad_out.contiguous();
  at::Tensor grad = at::empty_like(log_probs);
  poison_if(grad, poison);
  at::Tensor beta;  // scratch of the CUDA kernel; the CPU one allocates its own per sequence
  if (log_probs.is_cuda()) beta = at::empty({log_probs.size(1), 2, 2 * targets.size(1) + 1}, log_probs.options());
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "seqtrain_ctc_backward", [&] {
    auto a = make_args<scalar_t>(log_probs, targets, in_lens, tgt_lens, blank);
    a.alpha = alpha.data_ptr<scalar_t>();
    a.loss = loss.data_ptr<scalar_t>();
    a.grad_out = g.data_ptr<scalar_t>();
    a.grad = grad.data_ptr<scalar_t>();
    a.beta = beta.defined() ? beta.data_ptr<scalar_t>() : nullptr;
    grad_on(a, log_probs.is_cuda());
  });
  return grad;
}

}  // namespace seqtrain

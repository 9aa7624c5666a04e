// Independent LSTM calls over the same batch (the two directions of a BLSTM layer) run concurrently, one
// thread each, where there are no more threads than calls: the steps of one time loop are too small to split
// well over threads (the threads of one call meet at a barrier every step, and each waits for the slowest),
// while separate calls never wait on each other. Otherwise they run one after the other with all threads.
#include <ATen/Parallel.h>

#include <exception>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "ops.h"

namespace seqtrain {
namespace {

// call(i) for i in [0, n), each returning a result list; the lists one after the other.
template <typename Call>
std::vector<at::Tensor> run_calls(int64_t n, bool concurrent, const Call& call) {
  std::vector<std::vector<at::Tensor>> results(n);
#ifdef _OPENMP
  if (concurrent) {
    std::vector<std::exception_ptr> errors(n);
    // Inside the region ATen's parallel_for, our time loops and the BLAS calls each run on their one thread.
#pragma omp parallel for num_threads(at::get_num_threads()) schedule(static, 1)
    for (int64_t i = 0; i < n; ++i) {
      try {
        results[i] = call(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
    for (const auto& error : errors)
      if (error) std::rethrow_exception(error);
  }
#endif
  if (!concurrent)
    for (int64_t i = 0; i < n; ++i) results[i] = call(i);
  std::vector<at::Tensor> flat;
  for (auto& r : results) flat.insert(flat.end(), r.begin(), r.end());
  return flat;
}

void check_group(size_t n, std::initializer_list<size_t> sizes) {
  TORCH_CHECK(n > 0, "lstm group: no calls");
  for (size_t size : sizes) TORCH_CHECK(size == n, "lstm group: every argument list needs one entry per call");
}

}  // namespace

bool lstm_group_concurrent(int64_t calls, bool cuda) {
#ifdef _OPENMP
  const int threads = at::get_num_threads();
  return !cuda && calls > 1 && threads > 1 && threads <= calls && !omp_in_parallel();
#else
  return false;
#endif
}

std::vector<at::Tensor> lstm_forward_group(const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& w_ihs,
                                           const std::vector<at::Tensor>& w_hhs,
                                           const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& h0s,
                                           const std::vector<at::Tensor>& c0s, const std::vector<at::Tensor>& seq_lens,
                                           const std::vector<int64_t>& directions, bool bf16, bool poison) {
  const size_t n = xs.size();
  check_group(n, {w_ihs.size(), w_hhs.size(), biases.size(), h0s.size(), c0s.size(), seq_lens.size(),
                  directions.size()});
  return run_calls(n, lstm_group_concurrent(n, xs[0].is_cuda()), [&](int64_t i) {
    return lstm_forward(xs[i], w_ihs[i], w_hhs[i], biases[i], h0s[i], c0s[i], seq_lens[i], directions[i], bf16,
                        poison);
  });
}

std::vector<at::Tensor> lstm_backward_group(
    const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& w_ihs, const std::vector<at::Tensor>& w_hhs,
    const std::vector<at::Tensor>& seq_lens, const std::vector<at::Tensor>& hss, const std::vector<at::Tensor>& css,
    const std::vector<at::Tensor>& actss, const std::vector<at::Tensor>& dys, const std::vector<at::Tensor>& dh_ns,
    const std::vector<at::Tensor>& dc_ns, const std::vector<int64_t>& directions, bool bf16,
    const std::vector<bool>& need_dxs, bool poison) {
  const size_t n = xs.size();
  check_group(n, {w_ihs.size(), w_hhs.size(), seq_lens.size(), hss.size(), css.size(), actss.size(), dys.size(),
                  dh_ns.size(), dc_ns.size(), directions.size(), need_dxs.size()});
  return run_calls(n, lstm_group_concurrent(n, xs[0].is_cuda()), [&](int64_t i) {
    return lstm_backward(xs[i], w_ihs[i], w_hhs[i], seq_lens[i], hss[i], css[i], actss[i], dys[i], dh_ns[i],
                         dc_ns[i], directions[i], bf16, need_dxs[i], poison);
  });
}

}  // namespace seqtrain

// One OpenMP parallel region for a whole time loop: each thread owns a fixed share of the work items and
// the steps are separated by barriers. A fork-join per step (at::parallel_for) costs more than a barrier, and
// at 20–100 µs of work per step on few cores that difference is what kept a second thread from paying off.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace seqtrain {

// Calls body(begin, end, barrier) on each of up to at::get_num_threads() threads, with [begin, end) an even
// split of [0, n) (possibly empty); barrier() must be called equally often by every thread.
template <typename Body>
void parallel_steps(int64_t n, const Body& body) {
#ifdef _OPENMP
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n)));
  if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
    {
      const int64_t count = omp_get_num_threads(), id = omp_get_thread_num(), chunk = (n + count - 1) / count;
      const int64_t begin = std::min(n, id * chunk), end = std::min(n, begin + chunk);
      body(begin, end, [] {
#pragma omp barrier
      });
    }
    return;
  }
#endif
  body(int64_t{0}, n, [] {});
}

// Two zero-initialized buffers that alternate by step, for data that every thread reads in a step and each
// thread writes a part of for the next (the packed operand of the recurrent GEMM): a thread may write the
// next step's while others still read this one's, so one barrier per step separates the steps.
template <typename T>
class StepBuffers {
 public:
  explicit StepBuffers(int64_t size) : size_(size), data_(new T[2 * size]()) {}
  T* operator[](int64_t step) const { return data_.get() + (step % 2) * size_; }

 private:
  int64_t size_;
  std::unique_ptr<T[]> data_;
};

}  // namespace seqtrain

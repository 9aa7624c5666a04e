// Opt-in time accounting of the fused CPU time loops: wall time per phase, summed over threads and calls,
// for benchmarks/lstm_phases.py (which builds the kernels with -DSEQTRAIN_LOOP_TIMERS). Without the define
// a lap compiles to nothing.
#pragma once

#include <array>
#include <cstdint>

#ifdef SEQTRAIN_LOOP_TIMERS
#include <atomic>
#include <chrono>
#endif

namespace seqtrain {

// *_pack_w: packing W_hh (forward: with the first step's h, up to the first barrier); *_pack_a: packing the
// step's left operand (h, or the gate gradients); *_barrier: waiting for the other threads at the step's end.
enum class Phase : int { fwd_pack_w, fwd_gemm, fwd_cells, fwd_pack_a, fwd_barrier,
                         bwd_pack_w, bwd_cells, bwd_pack_a, bwd_barrier, bwd_gemm, count };
constexpr std::array<const char*, static_cast<int>(Phase::count)> kPhaseNames = {
    "fwd_pack_w", "fwd_gemm", "fwd_cells", "fwd_pack_a", "fwd_barrier",
    "bwd_pack_w", "bwd_cells", "bwd_pack_a", "bwd_barrier", "bwd_gemm"};
static_assert(kPhaseNames.back() != nullptr, "every Phase needs a name in kPhaseNames");

#ifdef SEQTRAIN_LOOP_TIMERS
constexpr bool kLoopTimers = true;
// Nanoseconds per phase over all threads and calls since the last reset (loop_timers.cpp).
extern std::array<std::atomic<int64_t>, static_cast<int>(Phase::count)> g_phase_ns;

// One thread's laps in one call: lap(p) books the time since the previous lap to p; the sums go to
// g_phase_ns once, when the thread's loop ends.
class LapTimer {
 public:
  void operator()(Phase p) {
    const auto now = std::chrono::steady_clock::now();
    ns_[static_cast<int>(p)] += std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count();
    last_ = now;
  }
  ~LapTimer() {
    for (int i = 0; i < static_cast<int>(Phase::count); ++i) g_phase_ns[i] += ns_[i];
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::array<int64_t, static_cast<int>(Phase::count)> ns_{};
};
#else
constexpr bool kLoopTimers = false;
struct LapTimer {
  void operator()(Phase) {}
};
#endif

// Seconds per phase (summed over threads) since the last call with reset; zeros without SEQTRAIN_LOOP_TIMERS.
std::array<double, static_cast<int>(Phase::count)> loop_phase_seconds(bool reset);

}  // namespace seqtrain

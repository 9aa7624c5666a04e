#include "loop_timers.h"

namespace seqtrain {

#ifdef SEQTRAIN_LOOP_TIMERS
std::array<std::atomic<int64_t>, static_cast<int>(Phase::count)> g_phase_ns{};
#endif

std::array<double, static_cast<int>(Phase::count)> loop_phase_seconds(bool reset) {
  std::array<double, static_cast<int>(Phase::count)> seconds{};
#ifdef SEQTRAIN_LOOP_TIMERS
  for (int i = 0; i < static_cast<int>(Phase::count); ++i)
    seconds[i] = 1e-9 * static_cast<double>(reset ? g_phase_ns[i].exchange(0) : g_phase_ns[i].load());
#else
  (void)reset;
#endif
  return seconds;
}

}  // namespace seqtrain

// Python bindings of the native ops; loaded by seqtrain/ops/build.py.
#include <torch/extension.h>

#include "loop_timers.h"
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "seqtrain native kernels: LSTM (NativeLstm2 design) and CTC";
  m.def("lstm_forward_group", &seqtrain::lstm_forward_group);
  m.def("lstm_backward_group", &seqtrain::lstm_backward_group);
  m.def("lstm_group_concurrent", &seqtrain::lstm_group_concurrent);
  m.def("lstm_bf16_available", &seqtrain::lstm_bf16_available);
  m.def("ctc_forward", &seqtrain::ctc_forward);
  m.def("ctc_backward", &seqtrain::ctc_backward);
  m.def(
      "lstm_loop_phases",
      [](bool reset) {
        pybind11::dict phases;  // empty unless built with SEQTRAIN_LOOP_TIMERS
        if (!seqtrain::kLoopTimers) return phases;
        const auto seconds = seqtrain::loop_phase_seconds(reset);
        for (size_t i = 0; i < seconds.size(); ++i) phases[seqtrain::kPhaseNames[i]] = seconds[i];
        return phases;
      },
      pybind11::arg("reset") = false);
#ifdef SEQTRAIN_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}

// Bindings of heat_kernels._C.
//
// The op schemas (heat_kernels::rollout_phi, heat_kernels::block_norm) and their fake implementations are
// defined in Python (heat_kernels/rollout_phi.py, heat_kernels/block_norm.py); this file only registers the
// compiled kernels for them: the CPU kernels always, the CUDA kernels when built with -DHEAT_WITH_CUDA (setup.py
// does so only for a CUDA torch). Importing heat_kernels._C performs the registration.
#include "heat_ops.h"

TORCH_LIBRARY_IMPL(heat_kernels, CPU, m) {
  m.impl("rollout_phi", &heat::rollout_phi_cpu);
  m.impl("block_norm", &heat::block_norm_cpu);
}

#ifdef HEAT_WITH_CUDA
TORCH_LIBRARY_IMPL(heat_kernels, CUDA, m) {
  m.impl("rollout_phi", &heat::rollout_phi_cuda);
  m.impl("block_norm", &heat::block_norm_cuda);
}
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Compiled kernels of heat_kernels (registered as torch.ops.heat_kernels.* implementations on import).";
  m.def("with_cuda", []() {
#ifdef HEAT_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether the CUDA kernels were compiled into this build.");
}

// Shared-memory limit of the current CUDA device, for the kernels that opt in to more than the default 48 KiB.
// A launch asking for more than the device allows fails with an opaque "invalid argument"; the kernels check
// against this first and say what was asked and what the device has (A100 / sm_80: 163 KiB, H100 / sm_90: 227 KiB).
#pragma once

#include <cuda_runtime.h>

#include <c10/cuda/CUDAException.h>

namespace heat {

inline size_t max_dynamic_shared_memory(int device) {
  int bytes = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(bytes);
}

}  // namespace heat

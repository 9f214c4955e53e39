// CUDA kernel of heat_kernels::block_norm (docs/design.md "S"); the Triton kernel in heat_kernels/block_norm.py is the
// default GPU path, this is the `backend="cuda"` alternative.
//
// s[i] = (1/m) sum_k || sum_y coef[y] * w[i,y] * (w[i,y] . r[k,i]) ||_1
//
// One block per token i. Phase 1: the warps share the m*K projections coef[y] * (w[i,y] . r[k,i]) (one warp per
// projection, lanes striding over d, shuffle reduction) and keep them in shared memory. Phase 2: the threads
// stride over d, form each output element sum_y proj[k,y] * w[i,y,c] in a register and add its magnitude; a block
// reduction gives s[i]. The (m, n, d) intermediate never exists; inputs are converted to fp32 on load.
//
// Built with -DHEAT_NVCC_SYNTAX_ONLY only the raw __global__ kernel is compiled (see rollout_phi_cuda.cu).
#include <cuda_runtime.h>

#include <cstdint>

#ifdef HEAT_NVCC_SYNTAX_ONLY
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#else
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda_limits.cuh"
#include "heat_ops.h"
#endif

namespace heat {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpSize = 32;

__device__ __forceinline__ float warp_reduce_sum(float v) {
  for (int o = kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// grid (n), block (kThreads), dynamic shared memory m*K floats. w (n, K, d), r (m, n, d) contiguous, coef (K,) fp32.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    block_norm_kernel(const scalar_t* __restrict__ w, const float* __restrict__ coef,
                      const scalar_t* __restrict__ r, float* __restrict__ s, int64_t n, int K, int64_t d, int m) {
  extern __shared__ float proj[];  // [m][K]
  __shared__ float red[kThreads / kWarpSize];
  const int64_t i = blockIdx.x;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  constexpr int warps = kThreads / kWarpSize;
  const scalar_t* wi = w + i * K * d;
  for (int p = warp; p < m * K; p += warps) {
    const int pk = p / K, y = p % K;
    const scalar_t* rp = r + (pk * n + i) * d;
    const scalar_t* wy = wi + y * d;
    float acc = 0.f;
    for (int64_t c = lane; c < d; c += kWarpSize) acc += static_cast<float>(wy[c]) * static_cast<float>(rp[c]);
    acc = warp_reduce_sum(acc);
    if (lane == 0) proj[p] = acc * coef[y];
  }
  __syncthreads();
  float total = 0.f;
  for (int pk = 0; pk < m; ++pk) {
    for (int64_t c = threadIdx.x; c < d; c += kThreads) {
      float o = 0.f;
      for (int y = 0; y < K; ++y) o += proj[pk * K + y] * static_cast<float>(wi[y * d + c]);
      total += fabsf(o);
    }
  }
  total = warp_reduce_sum(total);
  if (lane == 0) red[warp] = total;
  __syncthreads();
  if (warp == 0) {
    total = lane < warps ? red[lane] : 0.f;
    total = warp_reduce_sum(total);
    if (lane == 0) s[i] = total / static_cast<float>(m);
  }
}

#ifdef HEAT_NVCC_SYNTAX_ONLY
template __global__ void block_norm_kernel<float>(const float*, const float*, const float*, float*, int64_t, int,
                                                  int64_t, int);
template __global__ void block_norm_kernel<__half>(const __half*, const float*, const __half*, float*, int64_t, int,
                                                   int64_t, int);
template __global__ void block_norm_kernel<__nv_bfloat16>(const __nv_bfloat16*, const float*, const __nv_bfloat16*,
                                                          float*, int64_t, int, int64_t, int);
#endif  // HEAT_NVCC_SYNTAX_ONLY

}  // namespace

#ifndef HEAT_NVCC_SYNTAX_ONLY

at::Tensor block_norm_cuda(const at::Tensor& w, const at::Tensor& coef, const at::Tensor& r) {
  check_block_norm_inputs(w, coef, r);
  TORCH_CHECK(w.is_cuda(), "block_norm_cuda: expected CUDA tensors, got ", w.device());
  const c10::cuda::CUDAGuard guard(w.device());
  const int64_t n = w.size(0), K = w.size(1), d = w.size(2), m = r.size(0);
  TORCH_CHECK(m > 0, "block_norm: expected at least one probe (r of shape (m, n, d) with m >= 1), got ", r.sizes());
  auto s = at::zeros({n}, w.options().dtype(at::kFloat));
  if (n == 0) return s;
  const size_t smem = sizeof(float) * m * K;
  const size_t limit = max_dynamic_shared_memory(w.get_device());
  TORCH_CHECK(smem <= limit, "block_norm_cuda: expected m*K <= ", limit / sizeof(float), " (this device has ",
              limit / 1024, " KiB of shared memory per block), got m*K = ", m * K,
              "; use fewer probes or backend=\"triton\"");
  const bool same = w.scalar_type() == r.scalar_type();
  const auto wc = same ? w.contiguous() : w.to(at::kFloat).contiguous();
  const auto rc = same ? r.contiguous() : r.to(at::kFloat).contiguous();
  const auto cf = coef.to(at::kFloat).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, wc.scalar_type(), "block_norm_cuda", [&] {
    auto* kernel = block_norm_kernel<scalar_t>;
    if (smem > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<static_cast<unsigned>(n), kThreads, smem, stream>>>(
        wc.data_ptr<scalar_t>(), cf.data_ptr<float>(), rc.data_ptr<scalar_t>(), s.data_ptr<float>(), n,
        static_cast<int>(K), d, static_cast<int>(m));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return s;
}

#endif  // HEAT_NVCC_SYNTAX_ONLY

}  // namespace heat

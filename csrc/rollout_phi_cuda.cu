// CUDA kernels of heat_kernels::rollout_phi (docs/design.md "M"); the Triton kernel in heat_kernels/rollout_phi.py
// is the default GPU path, these are the `backend="cuda"` alternative.
//
// phi[b,h,i] = sum_{j >= i} rho[b,j] * softmax_i(cap(scaling * q[b,h,j] . k[b,kv(h),i]) + mask),
// kv(h) = h / (H / H_kv), cap(s) = softcap * tanh(s / softcap) with a softcap (Gemma 2), else s. The mask (heat_kernels/rollout_phi.py, as
// transformers' masking_utils): causal, key padding, optional sliding window j - i < window and chunks
// (j + shift) / chunk == (i + shift) / chunk, shift[b] = (-left padding of row b) mod chunk.
//
// Two passes, flash-style, nothing of size n x n is stored:
//   1. rollout_lse_kernel: a block of kRows warps, one query row per warp and one key per lane, streams the key
//      tiles (32 keys in shared memory) with an online max / sum and writes each row's log-sum-exp (+inf for a
//      row that sees no key, so that exp(s - lse) = 0 below). With a window / chunks only the key tiles in the
//      band of the block's rows are visited.
//   2. rollout_colsum_kernel: a block owns 32 key columns (one per lane) and loops over the query rows j >= i
//      in tiles of kRows (one row per warp), accumulating rho[j] * exp(s - lse[j]) in registers; the warps'
//      partial sums are added through shared memory. Each block owns its columns: no atomics. With a window /
//      chunks the row loop stops at the last row the block's last column can reach.
// Inputs may be fp32/fp16/bf16; everything is converted to fp32 on load and accumulated in fp32.
//
// Built with -DHEAT_NVCC_SYNTAX_ONLY (the Makefile's nvcc check on machines whose torch has no CUDA), only the raw
// __global__ kernels are compiled, for float/__half/__nv_bfloat16, without torch headers.
#include <cuda_runtime.h>

#include <cmath>
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

constexpr int kWarp = 32;
constexpr int kRows = 16;  // warps per block = query rows per tile
// __launch_bounds__(kWarp * kRows, 2): two blocks per SM, i.e. at most 64 registers per thread. With the block size
// alone ptxas kept the kernels at 40 registers and spilled 8-20 bytes to local memory (sm_80 and sm_90, CUDA 13.0);
// with two blocks per SM they use 53-60 registers and spill nothing (benchmarks/RESULTS-gpu-preflight.md).

__device__ __forceinline__ float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Query j may attend key i (0 <= i, j < n) under causality, the window (0: none) and the chunks (0: none).
__device__ __forceinline__ bool in_band(int64_t j, int64_t i, int64_t window, int64_t chunk, int64_t shift) {
  return i <= j && (window == 0 || j - i < window) && (chunk == 0 || (j + shift) / chunk == (i + shift) / chunk);
}

// Soft-capped score (softcap 0: none).
__device__ __forceinline__ float cap_score(float s, float softcap) {
  return softcap > 0.f ? softcap * tanhf(s / softcap) : s;
}

// Pass 1. grid (B*H, ceil(n / kRows)), block (kWarp, kRows), dynamic shared memory (kRows*d + kWarp*(d+1)) floats.
// q (B, H, n, d) and k (B, Hkv, n, d) contiguous; kpm (B, n) bool or nullptr; shift (B,) int64 (read only when
// chunk > 0); lse (B*H, n) fp32. window, chunk: 0 for none; softcap: 0 for none.
template <typename scalar_t>
__global__ void __launch_bounds__(kWarp* kRows, 2)
    rollout_lse_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k, const bool* __restrict__ kpm,
                       const int64_t* __restrict__ shifts, float* __restrict__ lse, int H, int Hkv, int64_t n, int d,
                       float scaling, int64_t window, int64_t chunk, float softcap) {
  extern __shared__ float smem[];
  float* qs = smem;               // [kRows][d], pre-scaled queries of this tile
  float* ks = smem + kRows * d;   // [kWarp][d + 1], one key tile (padded: conflict-free column reads)
  const int lane = threadIdx.x, row = threadIdx.y, tid = row * kWarp + lane;
  const int64_t bh = blockIdx.x, b = bh / H, h = bh % H, hk = h / (H / Hkv);
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * kRows, j = j0 + row;
  const scalar_t* qb = q + bh * n * d;
  const scalar_t* kb = k + (b * Hkv + hk) * n * d;
  for (int e = tid; e < kRows * d; e += kWarp * kRows) {
    const int64_t jr = j0 + e / d;
    qs[e] = jr < n ? static_cast<float>(qb[jr * d + e % d]) * scaling : 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int64_t shift = chunk > 0 ? shifts[b] : 0;
  const int64_t kend = j0 + kRows < n ? j0 + kRows : n;  // keys this tile's rows may see: kbegin .. kend - 1
  int64_t kbegin = 0;
  if (window > 0 && j0 - window + 1 > kbegin) kbegin = j0 - window + 1;
  if (chunk > 0 && ((j0 + shift) / chunk) * chunk - shift > kbegin) kbegin = ((j0 + shift) / chunk) * chunk - shift;
  for (int64_t i0 = (kbegin / kWarp) * kWarp; i0 < kend; i0 += kWarp) {
    __syncthreads();  // the previous key tile is consumed (and the query tile is loaded)
    for (int e = tid; e < kWarp * d; e += kWarp * kRows) {
      const int64_t ir = i0 + e / d;
      ks[(e / d) * (d + 1) + e % d] = ir < n ? static_cast<float>(kb[ir * d + e % d]) : 0.f;
    }
    __syncthreads();
    const int64_t i = i0 + lane;
    float s = 0.f;
    for (int c = 0; c < d; ++c) s += qs[row * d + c] * ks[lane * (d + 1) + c];
    s = cap_score(s, softcap);
    const bool ok = j < n && in_band(j, i, window, chunk, shift) && (kpm == nullptr || kpm[b * n + i]);
    const float m_new = fmaxf(m, warp_max(ok ? s : -INFINITY));
    if (m_new != -INFINITY) {  // uniform over the warp: the shuffles inside are safe
      l = l * expf(m - m_new) + warp_sum(ok ? expf(s - m_new) : 0.f);
      m = m_new;
    }
  }
  if (lane == 0 && j < n) lse[bh * n + j] = l > 0.f ? m + logf(l) : INFINITY;
}

// Pass 2. grid (B*H, ceil(n / kWarp)), block (kWarp, kRows), dynamic shared memory
// (kWarp*(d+1) + kRows*d + kRows*kWarp) floats. rho (B, n) fp32, lse (B*H, n), out (B*H, n) fp32.
template <typename scalar_t>
__global__ void __launch_bounds__(kWarp* kRows, 2)
    rollout_colsum_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                          const bool* __restrict__ kpm, const int64_t* __restrict__ shifts,
                          const float* __restrict__ rho, const float* __restrict__ lse, float* __restrict__ out,
                          int H, int Hkv, int64_t n, int d, float scaling, int64_t window, int64_t chunk,
                          float softcap) {
  extern __shared__ float smem[];
  float* ks = smem;                     // [kWarp][d + 1], this block's key columns
  float* qs = ks + kWarp * (d + 1);     // [kRows][d], one query tile
  float* red = qs + kRows * d;          // [kRows][kWarp], the warps' partial column sums
  const int lane = threadIdx.x, row = threadIdx.y, tid = row * kWarp + lane;
  const int64_t bh = blockIdx.x, b = bh / H, h = bh % H, hk = h / (H / Hkv);
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kWarp, i = i0 + lane;
  const scalar_t* qb = q + bh * n * d;
  const scalar_t* kb = k + (b * Hkv + hk) * n * d;
  for (int e = tid; e < kWarp * d; e += kWarp * kRows) {
    const int64_t ir = i0 + e / d;
    ks[(e / d) * (d + 1) + e % d] = ir < n ? static_cast<float>(kb[ir * d + e % d]) : 0.f;
  }
  const bool key_ok = i < n && (kpm == nullptr || kpm[b * n + i]);
  const int64_t shift = chunk > 0 ? shifts[b] : 0;
  // Rows this block's columns may be seen from: i0 .. jend - 1 (the band of its last column i0 + kWarp - 1).
  int64_t jend = n;
  const int64_t last = i0 + kWarp - 1;
  if (window > 0 && last + window < jend) jend = last + window;
  if (chunk > 0) {
    const int64_t chunk_end = ((last + shift) / chunk + 1) * chunk - shift;
    if (chunk_end < jend) jend = chunk_end;
  }
  float acc = 0.f;
  for (int64_t j0 = i0; j0 < jend; j0 += kRows) {
    __syncthreads();  // the previous query tile is consumed (and the key tile is loaded)
    for (int e = tid; e < kRows * d; e += kWarp * kRows) {
      const int64_t jr = j0 + e / d;
      qs[e] = jr < n ? static_cast<float>(qb[jr * d + e % d]) * scaling : 0.f;
    }
    __syncthreads();
    const int64_t j = j0 + row;
    if (j < n && key_ok && in_band(j, i, window, chunk, shift)) {
      const float lj = lse[bh * n + j];
      if (lj != INFINITY) {
        float s = 0.f;
        for (int c = 0; c < d; ++c) s += qs[row * d + c] * ks[lane * (d + 1) + c];
        acc += rho[b * n + j] * expf(cap_score(s, softcap) - lj);
      }
    }
  }
  red[row * kWarp + lane] = acc;
  __syncthreads();
  if (row == 0 && i < n) {
    float total = 0.f;
    for (int r = 0; r < kRows; ++r) total += red[r * kWarp + lane];
    out[bh * n + i] = total;
  }
}

#ifdef HEAT_NVCC_SYNTAX_ONLY
// Instantiate the kernels for the three input dtypes so that the syntax check compiles their bodies.
#define HEAT_INSTANTIATE(T)                                                                                          \
  template __global__ void rollout_lse_kernel<T>(const T*, const T*, const bool*, const int64_t*, float*, int, int,   \
                                                 int64_t, int, float, int64_t, int64_t, float);                      \
  template __global__ void rollout_colsum_kernel<T>(const T*, const T*, const bool*, const int64_t*, const float*,    \
                                                    const float*, float*, int, int, int64_t, int, float, int64_t,    \
                                                    int64_t, float);
HEAT_INSTANTIATE(float)
HEAT_INSTANTIATE(__half)
HEAT_INSTANTIATE(__nv_bfloat16)
#undef HEAT_INSTANTIATE
#endif  // HEAT_NVCC_SYNTAX_ONLY

}  // namespace

#ifndef HEAT_NVCC_SYNTAX_ONLY

at::Tensor rollout_phi_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rho,
                            const std::optional<at::Tensor>& key_padding_mask, double scaling,
                            std::optional<int64_t> window, std::optional<double> softcap,
                            std::optional<int64_t> chunk) {
  check_rollout_inputs(q, k, rho, key_padding_mask, window, softcap, chunk);
  TORCH_CHECK(q.is_cuda(), "rollout_phi_cuda: expected CUDA tensors, got ", q.device());
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3), Hkv = k.size(1);
  auto out = at::zeros({B, H, n}, q.options().dtype(at::kFloat));
  if (B * H == 0 || n == 0) return out;
  TORCH_CHECK(B * H < (int64_t{1} << 31) && (n + kRows - 1) / kRows < 65536,
              "rollout_phi_cuda: expected B*H < 2^31 and n < ", 65536 * kRows, ", got ", B * H, " and ", n);
  const auto qc = q.contiguous(), kc = k.contiguous();
  const auto rhof = rho.to(at::kFloat).contiguous();
  at::Tensor mask;
  if (key_padding_mask.has_value()) mask = key_padding_mask->contiguous();
  const bool* kpm = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  // A window of n or more, or chunks of n or more, mask nothing that causality does not (0: none).
  const int64_t win = window.has_value() && *window < n ? *window : 0;
  const int64_t chk = chunk.has_value() && *chunk < n ? *chunk : 0;
  const float cap = softcap.has_value() ? static_cast<float>(*softcap) : 0.f;
  // shift[b] = (-left padding) mod chunk, left padding = transformers' (mask.cumsum(-1) == 0).sum(-1).
  at::Tensor shifts;
  if (chk > 0) {
    shifts = mask.defined()
                 ? mask.to(at::kLong).cumsum(-1).eq(0).sum(-1).neg().remainder(chk).to(at::kLong).contiguous()
                 : at::zeros({B}, q.options().dtype(at::kLong));
  }
  const int64_t* shift_ptr = shifts.defined() ? shifts.data_ptr<int64_t>() : nullptr;
  auto lse = at::empty({B * H, n}, out.options());

  const size_t smem1 = sizeof(float) * (kRows * d + kWarp * (d + 1));
  const size_t smem2 = sizeof(float) * (kWarp * (d + 1) + kRows * d + kRows * kWarp);
  const size_t limit = max_dynamic_shared_memory(q.get_device());
  TORCH_CHECK(smem2 <= limit, "rollout_phi_cuda: expected a head dimension d <= ",
              (limit / sizeof(float) - kWarp - kRows * kWarp) / (kWarp + kRows), " (this device has ", limit / 1024,
              " KiB of shared memory per block), got d = ", d, "; use backend=\"triton\" or \"torch\"");
  const dim3 block(kWarp, kRows);
  const dim3 grid1(static_cast<unsigned>(B * H), static_cast<unsigned>((n + kRows - 1) / kRows));
  const dim3 grid2(static_cast<unsigned>(B * H), static_cast<unsigned>((n + kWarp - 1) / kWarp));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "rollout_phi_cuda", [&] {
    auto* k1 = rollout_lse_kernel<scalar_t>;
    auto* k2 = rollout_colsum_kernel<scalar_t>;
    if (smem2 > 48 * 1024) {  // large head dims: opt in to more than the default 48 KiB of shared memory
      C10_CUDA_CHECK(cudaFuncSetAttribute(k1, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem1)));
      C10_CUDA_CHECK(cudaFuncSetAttribute(k2, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem2)));
    }
    k1<<<grid1, block, smem1, stream>>>(qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), kpm, shift_ptr,
                                        lse.data_ptr<float>(), static_cast<int>(H), static_cast<int>(Hkv), n,
                                        static_cast<int>(d), static_cast<float>(scaling), win, chk, cap);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    k2<<<grid2, block, smem2, stream>>>(qc.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(), kpm, shift_ptr,
                                        rhof.data_ptr<float>(), lse.data_ptr<float>(), out.data_ptr<float>(),
                                        static_cast<int>(H), static_cast<int>(Hkv), n, static_cast<int>(d),
                                        static_cast<float>(scaling), win, chk, cap);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

#endif  // HEAT_NVCC_SYNTAX_ONLY

}  // namespace heat

// CPU kernel of heat_kernels::block_norm (docs/design.md "S", the fisher/lowrank reduction).
//
// s[i] = (1/m) sum_k || sum_y coef[y] * w[i,y] * (w[i,y] . r[k,i]) ||_1
//
// One token at a time (at::parallel_for over tokens): its block w[i] (K x d) and its m probes are read in fp32
// (converted once for fp16/bf16), then for every probe the K projections and the d outputs are formed in two small
// fp32 scratch buffers, so the (m, n, d) intermediate of the reference never exists. All accumulation is fp32.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "heat_ops.h"

namespace heat {
namespace {

// On x86-64 Linux the per-token routine is compiled twice (AVX2+FMA and baseline SSE2) and the loader picks one
// at run time (GCC/Clang function multiversioning), since setup.py compiles for the baseline ISA.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define HEAT_MULTIVERSION __attribute__((target_clones("avx2,fma", "default")))
#else
#define HEAT_MULTIVERSION
#endif

constexpr int64_t kLanes = 16;  // independent partial sums of the reductions (vectorisable without -ffast-math)

// Token i, fp32: s_i = (1/m) sum_p || sum_y coef_y (w_y . r_p) w_y ||_1 with w (K, d), r (m, d) row-major.
// proj (K) and out (d) are scratch.
HEAT_MULTIVERSION
float token_norm(const float* w, const float* coef, const float* r, int64_t K, int64_t d, int64_t m, float* proj,
                 float* out) {
  float total = 0.f;
  for (int64_t p = 0; p < m; ++p) {
    const float* rp = r + p * d;
    for (int64_t y = 0; y < K; ++y) {  // proj_y = coef_y * (w_y . r_p)
      const float* wy = w + y * d;
      float acc[kLanes] = {};
      int64_t c = 0;
      for (; c + kLanes <= d; c += kLanes) {
        for (int64_t l = 0; l < kLanes; ++l) acc[l] += wy[c + l] * rp[c + l];
      }
      float dot = 0.f;
      for (int64_t l = 0; l < kLanes; ++l) dot += acc[l];
      for (; c < d; ++c) dot += wy[c] * rp[c];
      proj[y] = coef[y] * dot;
    }
    std::fill(out, out + d, 0.f);
    int64_t y = 0;
    for (; y + 4 <= K; y += 4) {  // out += sum_y proj_y w_y, four rows per pass over out
      const float a0 = proj[y], a1 = proj[y + 1], a2 = proj[y + 2], a3 = proj[y + 3];
      const float *w0 = w + y * d, *w1 = w0 + d, *w2 = w1 + d, *w3 = w2 + d;
      for (int64_t c = 0; c < d; ++c) out[c] += a0 * w0[c] + a1 * w1[c] + a2 * w2[c] + a3 * w3[c];
    }
    for (; y < K; ++y) {
      const float a = proj[y];
      const float* wy = w + y * d;
      for (int64_t c = 0; c < d; ++c) out[c] += a * wy[c];
    }
    float acc[kLanes] = {};
    int64_t c = 0;
    for (; c + kLanes <= d; c += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) acc[l] += std::fabs(out[c + l]);
    }
    float norm = 0.f;
    for (int64_t l = 0; l < kLanes; ++l) norm += acc[l];
    for (; c < d; ++c) norm += std::fabs(out[c]);
    total += norm;
  }
  return total / static_cast<float>(m);
}

template <typename scalar_t>
void block_norm_kernel(const scalar_t* w, const float* coef, const scalar_t* r, float* s, int64_t n, int64_t K,
                       int64_t d, int64_t m) {
  const int64_t cost = std::max<int64_t>(1, 4 * m * K * d);
  const int64_t grain = std::max<int64_t>(1, 65536 / cost);
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    constexpr bool is_float = std::is_same_v<scalar_t, float>;
    // fp16/bf16: token i's block and probes are converted to fp32 once; fp32 is read in place.
    std::vector<float> wf(is_float ? 0 : K * d), rf(m * d), proj(K), out(d);
    for (int64_t i = begin; i < end; ++i) {
      const float* wi;
      const float* ri;
      if constexpr (is_float) {
        wi = w + i * K * d;  // the probes of token i are strided by n * d: gather them
        for (int64_t p = 0; p < m; ++p) std::copy_n(r + (p * n + i) * d, d, rf.data() + p * d);
        ri = rf.data();
      } else {
        for (int64_t e = 0; e < K * d; ++e) wf[e] = static_cast<float>(w[i * K * d + e]);
        for (int64_t p = 0; p < m; ++p) {
          for (int64_t c = 0; c < d; ++c) rf[p * d + c] = static_cast<float>(r[(p * n + i) * d + c]);
        }
        wi = wf.data();
        ri = rf.data();
      }
      s[i] = token_norm(wi, coef, ri, K, d, m, proj.data(), out.data());
    }
  });
}

}  // namespace

at::Tensor block_norm_cpu(const at::Tensor& w, const at::Tensor& coef, const at::Tensor& r) {
  check_block_norm_inputs(w, coef, r);
  TORCH_CHECK(w.device().is_cpu(), "block_norm_cpu: expected CPU tensors, got ", w.device());
  const int64_t n = w.size(0), K = w.size(1), d = w.size(2), m = r.size(0);
  TORCH_CHECK(m > 0, "block_norm: expected at least one probe (r of shape (m, n, d) with m >= 1), got ", r.sizes());
  auto s = at::zeros({n}, w.options().dtype(at::kFloat));
  if (n == 0) return s;
  // Mixed input dtypes run in fp32; otherwise the kernel reads the input dtype and converts on the fly.
  const bool same = w.scalar_type() == r.scalar_type();
  const auto wc = same ? w.contiguous() : w.to(at::kFloat).contiguous();
  const auto rc = same ? r.contiguous() : r.to(at::kFloat).contiguous();
  const auto cf = coef.to(at::kFloat).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, wc.scalar_type(), "block_norm_cpu", [&] {
    block_norm_kernel<scalar_t>(wc.data_ptr<scalar_t>(), cf.data_ptr<float>(), rc.data_ptr<scalar_t>(),
                                s.data_ptr<float>(), n, K, d, m);
  });
  return s;
}

}  // namespace heat

// Declarations of the kernels of heat_kernels._C. Each op's schema is defined in Python
// (heat_kernels/rollout_phi.py, heat_kernels/block_norm.py); heat_ops.cpp registers these functions as its
// CPU (and, when built with -DHEAT_WITH_CUDA, CUDA) implementations.
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <optional>

namespace heat {

// phi[b,h,i] = sum_j rho[b,j] * softmax_i(cap(scaling * q[b,h,j] . k[b,h/(H/Hkv),i]) + mask), fp32 (B, H, n); the
// mask is causal + key padding + optional sliding window / chunks, cap the optional soft-capping (rollout_phi.py).
at::Tensor rollout_phi_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rho,
                           const std::optional<at::Tensor>& key_padding_mask, double scaling,
                           std::optional<int64_t> window, std::optional<double> softcap,
                           std::optional<int64_t> chunk);

// s[i] = (1/m) sum_k || sum_y coef[y] * w[i,y] * (w[i,y] . r[k,i]) ||_1, fp32 (n,).
at::Tensor block_norm_cpu(const at::Tensor& w, const at::Tensor& coef, const at::Tensor& r);

#ifdef HEAT_WITH_CUDA
at::Tensor rollout_phi_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rho,
                            const std::optional<at::Tensor>& key_padding_mask, double scaling,
                            std::optional<int64_t> window, std::optional<double> softcap,
                            std::optional<int64_t> chunk);
at::Tensor block_norm_cuda(const at::Tensor& w, const at::Tensor& coef, const at::Tensor& r);
#endif

// Shape and dtype checks shared by the CPU and CUDA paths (errors name what was expected and what came).
inline void check_rollout_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rho,
                                 const std::optional<at::Tensor>& key_padding_mask, std::optional<int64_t> window,
                                 std::optional<double> softcap, std::optional<int64_t> chunk) {
  TORCH_CHECK(!window.has_value() || *window >= 1, "rollout_phi: expected window >= 1 or None, got ", *window);
  TORCH_CHECK(!chunk.has_value() || *chunk >= 1, "rollout_phi: expected chunk >= 1 or None, got ", *chunk);
  TORCH_CHECK(!softcap.has_value() || (std::isfinite(*softcap) && *softcap > 0),
              "rollout_phi: expected a finite softcap > 0 or None, got ", *softcap);
  TORCH_CHECK(q.dim() == 4, "rollout_phi: expected q of shape (B, H, n, d_h), got ", q.sizes());
  TORCH_CHECK(k.dim() == 4, "rollout_phi: expected k of shape (B, H_kv, n, d_h), got ", k.sizes());
  const auto B = q.size(0), H = q.size(1), n = q.size(2), d = q.size(3);
  TORCH_CHECK(k.size(0) == B && k.size(2) == n && k.size(3) == d,
              "rollout_phi: expected k of shape (", B, ", H_kv, ", n, ", ", d, "), got ", k.sizes());
  TORCH_CHECK(k.size(1) > 0 && H % k.size(1) == 0, "rollout_phi: expected the number of query heads (", H,
              ") to be a multiple of the key heads, got ", k.size(1));
  TORCH_CHECK(rho.dim() == 2 && rho.size(0) == B && rho.size(1) == n, "rollout_phi: expected rho of shape (", B,
              ", ", n, "), got ", rho.sizes());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()) && q.scalar_type() == k.scalar_type(),
              "rollout_phi: expected q and k of the same floating dtype, got ", q.scalar_type(), " and ",
              k.scalar_type());
  TORCH_CHECK(at::isFloatingType(rho.scalar_type()), "rollout_phi: expected a floating rho, got ", rho.scalar_type());
  TORCH_CHECK(k.device() == q.device() && rho.device() == q.device(),
              "rollout_phi: expected q, k, rho on one device, got ", q.device(), ", ", k.device(), ", ", rho.device());
  if (key_padding_mask.has_value()) {
    const auto& m = *key_padding_mask;
    TORCH_CHECK(m.dim() == 2 && m.size(0) == B && m.size(1) == n, "rollout_phi: expected key_padding_mask of shape (",
                B, ", ", n, "), got ", m.sizes());
    TORCH_CHECK(m.scalar_type() == at::kBool, "rollout_phi: expected a bool key_padding_mask, got ", m.scalar_type());
    TORCH_CHECK(m.device() == q.device(), "rollout_phi: expected key_padding_mask on ", q.device(), ", got ",
                m.device());
  }
}

inline void check_block_norm_inputs(const at::Tensor& w, const at::Tensor& coef, const at::Tensor& r) {
  TORCH_CHECK(w.dim() == 3, "block_norm: expected w of shape (n, K, d), got ", w.sizes());
  TORCH_CHECK(coef.dim() == 1 && coef.size(0) == w.size(1), "block_norm: expected coef of shape (", w.size(1),
              ",), got ", coef.sizes());
  TORCH_CHECK(r.dim() == 3 && r.size(1) == w.size(0) && r.size(2) == w.size(2), "block_norm: expected r of shape (m, ",
              w.size(0), ", ", w.size(2), "), got ", r.sizes());
  TORCH_CHECK(at::isFloatingType(w.scalar_type()) && at::isFloatingType(coef.scalar_type()) &&
                  at::isFloatingType(r.scalar_type()),
              "block_norm: expected floating w, coef, r, got ", w.scalar_type(), ", ", coef.scalar_type(), ", ",
              r.scalar_type());
  TORCH_CHECK(coef.device() == w.device() && r.device() == w.device(), "block_norm: expected w, coef, r on one device, got ",
              w.device(), ", ", coef.device(), ", ", r.device());
}

}  // namespace heat

// CPU kernel of heat_kernels::rollout_phi (DESIGN.md "M").
//
// phi[b,h,i] = sum_{j >= i} rho[b,j] * softmax_i(scaling * q[b,h,j] . k[b,kv(h),i] + mask), kv(h) = h / (H / H_kv).
//
// Streaming over tiles of kTileRows query rows: a tile's scores against the keys it may see (tile x n at most,
// never n x n) are computed with one GEMM and masked (causal + key padding); each row's max and sum of exponentials
// (its log-sum-exp) are complete inside the tile because a row sees all its keys, so exp(s - max) is formed in
// place and the rho-weighted column sums are added into phi with one GEMV whose weights rho_j / sum_j carry the
// normalisation. The only scratch is the tile's scores. Everything is fp32 whatever the input dtype. Query rows
// before the first real key of a sequence (left padding) see no key at all: they contribute 0 and are skipped.
//
// Parallelism: at::parallel_for over (batch*head, row chunk). Row chunks split the causal triangle into pieces
// of equal area so that few heads still keep every thread busy; each chunk owns its own phi row (no atomics)
// and the chunks of a head are summed at the end.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "heat_ops.h"

namespace heat {
namespace {

constexpr int64_t kTileRows = 64;

// First row of chunk c of `rows` rows split into `chunks` pieces of equal causal area (row r costs r + 1).
int64_t chunk_start(int64_t rows, int64_t c, int64_t chunks) {
  if (c >= chunks) return rows;
  const double x = static_cast<double>(rows) * std::sqrt(static_cast<double>(c) / static_cast<double>(chunks));
  return std::min<int64_t>(rows, static_cast<int64_t>(std::llround(x)));
}

}  // namespace

at::Tensor rollout_phi_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rho,
                           const std::optional<at::Tensor>& key_padding_mask, double scaling) {
  check_rollout_inputs(q, k, rho, key_padding_mask);
  TORCH_CHECK(q.device().is_cpu(), "rollout_phi_cpu: expected CPU tensors, got ", q.device());
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2);
  const int64_t Hkv = k.size(1), group = H / Hkv;
  auto out = at::zeros({B, H, n}, q.options().dtype(at::kFloat));
  if (B * H == 0 || n == 0) return out;

  const auto qc = q.contiguous();
  const auto kf = k.to(at::kFloat).contiguous();  // (B, H_kv, n, d): O(n d), a no-op for contiguous fp32 keys
  const auto rhof = rho.to(at::kFloat).contiguous();

  // Per sequence: the first real key (rows before it see nothing) and, when a real key is followed by a padded
  // one (not left padding), an additive column bias of 0 / -inf.
  std::vector<int64_t> first(B, 0);
  bool holes = false;
  at::Tensor bias;
  if (key_padding_mask.has_value()) {
    const auto mask = key_padding_mask->contiguous();
    const bool* mp = mask.data_ptr<bool>();
    for (int64_t b = 0; b < B; ++b) {
      int64_t f = n;
      for (int64_t i = 0; i < n; ++i) {
        if (mp[b * n + i]) {
          f = i;
          break;
        }
      }
      first[b] = f;
      for (int64_t i = f; i < n; ++i) holes = holes || !mp[b * n + i];
    }
    if (holes) {
      bias = at::zeros({B, n}, rhof.options()).masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
    }
  }

  const int64_t BH = B * H;
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((8 * threads + BH - 1) / BH, n / kTileRows));
  auto partial = chunks == 1 ? out.view({BH, 1, n}) : at::zeros({BH, chunks, n}, out.options());
  const float inf = std::numeric_limits<float>::infinity();

  at::parallel_for(0, BH * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / chunks, c = item % chunks;
      const int64_t b = bh / H, h = bh % H;
      const int64_t f = first[b], rows = n - f;
      const int64_t r0 = f + chunk_start(rows, c, chunks), r1 = f + chunk_start(rows, c + 1, chunks);
      if (r0 >= r1) continue;
      const auto q_bh = qc[b][h];                      // (n, d)
      const auto k_b = kf[b][h / group];               // (n, d)
      const auto rho_b = rhof[b];                      // (n,)
      auto acc = partial[bh][c];                       // (n,) this item's phi row
      for (int64_t j0 = r0; j0 < r1; j0 += kTileRows) {
        const int64_t tj = std::min(kTileRows, r1 - j0);
        const int64_t cols = j0 + tj - f;  // keys f .. j0 + tj - 1
        const auto q_tile = q_bh.narrow(0, j0, tj).to(at::kFloat).mul(scaling);
        auto scores = at::mm(q_tile, k_b.narrow(0, f, cols).t());  // (tj, cols), contiguous fp32
        float* s = scores.data_ptr<float>();
        for (int64_t r = 0; r < tj; ++r) {  // causal: key i > query j is masked
          std::fill(s + r * cols + (j0 + r - f + 1), s + (r + 1) * cols, -inf);
        }
        if (holes) scores.add_(bias[b].narrow(0, f, cols));
        // Unnormalised probabilities in place: exp(s - rowmax); row j always sees key f (a real key, f <= j), so
        // no row of the tile is fully masked here and every row sum is >= 1.
        scores.sub_(scores.amax(1, /*keepdim=*/true)).exp_();
        // phi[f:] += P^T (rho / rowsum): the normalisation folds into the GEMV weights.
        const auto weights = rho_b.narrow(0, j0, tj) / scores.sum(1);
        acc.narrow(0, f, cols).addmv_(scores.t(), weights);
      }
    }
  });
  if (chunks > 1) {
    auto out2d = out.view({BH, n});
    at::sum_out(out2d, partial, {1});
  }
  return out;
}

}  // namespace heat

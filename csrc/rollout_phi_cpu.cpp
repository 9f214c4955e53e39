// CPU kernel of heat_kernels::rollout_phi (docs/design.md "M").
//
// phi[b,h,i] = sum_{j >= i} rho[b,j] * softmax_i(cap(scaling * q[b,h,j] . k[b,kv(h),i]) + mask),
// kv(h) = h / (H / H_kv), cap(s) = softcap * tanh(s / softcap) with a softcap (Gemma 2), else s.
//
// Masks (heat_kernels/rollout_phi.py, as transformers' masking_utils): causal i <= j; key padding; a sliding
// window j - i < window (positions in the padded sequence); chunks (j - p) / chunk == (i - p) / chunk, p the
// row's left padding (= its first real key f), computed here as (j + shift) / chunk with shift = (-f) mod chunk.
//
// Streaming over tiles of kTileRows query rows: a tile's scores against the keys it may see (tile x n at most,
// never n x n; tile x (window + tile) with a window, tile x (chunk + tile) with chunks) are computed with one GEMM
// and masked; each row's max and sum of exponentials
// (its log-sum-exp) are complete inside the tile because a row sees all its keys, so exp(s - max) is formed in
// place and the rho-weighted column sums are added into phi with one GEMV whose weights rho_j / sum_j carry the
// normalisation. The only scratch is the tile's scores. Everything is fp32 whatever the input dtype. Query rows
// before the first real key of a sequence (left padding) see no key at all: they contribute 0 and are skipped;
// a later row whose window / chunk holds only padded keys contributes 0 too.
//
// Parallelism: at::parallel_for over (batch*head, row chunk). Row chunks split the causal triangle into pieces
// of equal area (equal row counts for a banded mask, whose rows cost about the same) so that few heads still keep
// every thread busy; each chunk owns its own phi row (no atomics) and the chunks of a head are summed at the end.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "heat_ops.h"

namespace heat {
namespace {

constexpr int64_t kTileRows = 64;

// First row of chunk c of `rows` rows split into `chunks` pieces of equal causal area (row r costs r + 1), or of
// equal row counts when `banded` (a row costs at most the band width).
int64_t chunk_start(int64_t rows, int64_t c, int64_t chunks, bool banded) {
  if (c >= chunks) return rows;
  const double frac = static_cast<double>(c) / static_cast<double>(chunks);
  const double x = static_cast<double>(rows) * (banded ? frac : std::sqrt(frac));
  return std::min<int64_t>(rows, static_cast<int64_t>(std::llround(x)));
}

}  // namespace

at::Tensor rollout_phi_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rho,
                           const std::optional<at::Tensor>& key_padding_mask, double scaling,
                           std::optional<int64_t> window, std::optional<double> softcap,
                           std::optional<int64_t> chunk) {
  check_rollout_inputs(q, k, rho, key_padding_mask, window, softcap, chunk);
  TORCH_CHECK(q.device().is_cpu(), "rollout_phi_cpu: expected CPU tensors, got ", q.device());
  const int64_t B = q.size(0), H = q.size(1), n = q.size(2);
  const int64_t Hkv = k.size(1), group = H / Hkv;
  // A window of n or more, or chunks of n or more, mask nothing that causality does not.
  const int64_t win = window.has_value() && *window < n ? *window : 0;
  const int64_t chk = chunk.has_value() && *chunk < n ? *chunk : 0;
  const bool banded = win > 0 || chk > 0;
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
      const int64_t r0 = f + chunk_start(rows, c, chunks, banded), r1 = f + chunk_start(rows, c + 1, chunks, banded);
      if (r0 >= r1) continue;
      const int64_t shift = chk > 0 ? ((-f) % chk + chk) % chk : 0;
      // First key query row j may see (the band's lower edge; its last is j).
      auto first_key = [&](int64_t j) {
        int64_t lo = f;
        if (win > 0) lo = std::max(lo, j - win + 1);
        if (chk > 0) lo = std::max(lo, ((j + shift) / chk) * chk - shift);
        return lo;
      };
      const auto q_bh = qc[b][h];                      // (n, d)
      const auto k_b = kf[b][h / group];               // (n, d)
      const auto rho_b = rhof[b];                      // (n,)
      auto acc = partial[bh][c];                       // (n,) this item's phi row
      for (int64_t j0 = r0; j0 < r1; j0 += kTileRows) {
        const int64_t tj = std::min(kTileRows, r1 - j0);
        const int64_t c0 = first_key(j0), cols = j0 + tj - c0;  // keys c0 .. j0 + tj - 1
        const auto q_tile = q_bh.narrow(0, j0, tj).to(at::kFloat).mul(scaling);
        auto scores = at::mm(q_tile, k_b.narrow(0, c0, cols).t());  // (tj, cols), contiguous fp32
        if (softcap.has_value()) scores.div_(*softcap).tanh_().mul_(*softcap);
        float* s = scores.data_ptr<float>();
        for (int64_t r = 0; r < tj; ++r) {  // outside the band [first_key(j), j]: masked
          std::fill(s + r * cols, s + r * cols + (first_key(j0 + r) - c0), -inf);
          std::fill(s + r * cols + (j0 + r - c0 + 1), s + (r + 1) * cols, -inf);
        }
        if (holes) scores.add_(bias[b].narrow(0, c0, cols));
        // Unnormalised probabilities in place: exp(s - rowmax). Without holes row j always sees key j (real, as
        // j >= f), so every row sum is >= 1; with holes a banded row may see no real key: its max is -inf
        // (clamped so that exp gives 0, not NaN) and its weight 0.
        auto rowmax = scores.amax(1, /*keepdim=*/true);
        if (holes) rowmax.clamp_min_(std::numeric_limits<float>::lowest());
        scores.sub_(rowmax).exp_();
        // phi[c0:] += P^T (rho / rowsum): the normalisation folds into the GEMV weights.
        const auto rowsum = scores.sum(1);
        auto weights = rho_b.narrow(0, j0, tj) / rowsum;
        if (holes) weights.masked_fill_(rowsum.eq(0), 0.f);
        acc.narrow(0, c0, cols).addmv_(scores.t(), weights);
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

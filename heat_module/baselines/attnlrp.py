"""AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers", ICML 2024),
native: one forward and one backward, relevance_i = Σ_d x_{i,d} · ∂̃out/∂x_{i,d}, where ∂̃ is the gradient under the
AttnLRP rules written in the Gradient×Input form of the ``lxt`` package (``lxt/efficient/rules.py`` and
``lxt/efficient/patches.py`` of rachtibat/LRP-eXplains-Transformers). ``out`` is the target's logit (default, what the
paper explains) or its log-probability (``objective="logprob"``).

Rules (paper equation → what the modified backward does):

* **Softmax** (the paper's softmax rule, a first-order Taylor step at the logits x:
  R_i^{l-1} = x_i (R_i^l − s_i Σ_j R_j^l)): with R^l = s ⊙ ĝ (ĝ the modified gradient reaching the probabilities s)
  this is x ⊙ s ⊙ (ĝ − Σ_j s_j ĝ_j) = x ⊙ ∂̃ — the plain softmax gradient, as in lxt (which leaves the softmax
  untouched). The rule is not conservative: each softmax row absorbs b = Σ_j s_j ĝ_j − Σ_j z_j ∂̃_j (z = the
  pre-mask attention logits); the method reports Σ b as ``extra["softmax_bias"]``. The additive mask is a constant;
  masked entries get s = 0 and no relevance.
* **Bilinear matmuls q·kᵀ and A·v** (uniform rule, eq. 7; lxt ``divide_gradient``): the gradient into each factor
  of a product of two inputs is halved: at v and at A = softmax(·) for A·v, at q and k for q·kᵀ. lxt's
  ``wrap_attention_forward`` divides q and k by 4 and v by 2 instead — the same gradient, since the softmax chain
  is linear in ĝ — but halving at A keeps the relevance reaching the softmax (so ``softmax_bias``) the rule's.
  Attention is computed in (at least) fp32, GQA through ``repeat_kv``, with the model's own additive mask (causal,
  sliding window, padding).
* **Attention soft-capping** c·tanh(z/c) (Gemma 2): identity rule (eq. 9) through tanh, ∂̃ = tanh(z/c)/(z/c) — our
  choice (lxt has no softcap rule); it keeps the layer conservative.
* **Normalisation layers** (identity rule on the normaliser, lxt ``rms_norm_forward`` / ``layer_norm_forward``): every
  module whose class name ends in ``RMSNorm`` or ``LayerNorm`` is made linear by treating the normaliser 1/rms(x)
  (1/std(x) for LayerNorm, whose mean subtraction stays in the gradient) as a constant. The RMSNorm gain is read as
  ``module(1) · sqrt(1 + eps)``, so Llama's w and Gemma's (1 + w) alike are handled; the forward value is the
  module's own.
* **Element-wise activations** (identity rule, eq. 9; lxt ``identity_rule_implicit``): ∂̃ = act(x)/x (0 where x = 0).
* **Gated MLP** act(gate) ⊙ up (uniform rule, eq. 7; lxt ``gated_mlp_forward``): the gradient of the product (the
  input of ``down_proj``) is halved, so each factor gets half. Recognised layouts: ``gate_proj``/``up_proj``/
  ``down_proj`` (Llama, Qwen2, Mistral, Gemma) and the fused ``gate_up_proj``/``down_proj`` (Phi-3); plain
  two-projection MLPs (GPT-2, GPT-J, GPT-NeoX) get the activation rule only; any other MLP raises ``TypeError``.
* **Everything else** (linear layers, residual adds, RoPE, embeddings, the LM head): the plain gradient (LRP-0 =
  Gradient×Input). Biases absorb relevance; a final-logit soft-cap (Gemma 2) keeps its plain gradient.

**Conservation** (tested): with the logit objective, on a model without biases or learned position embeddings,
Σ_i relevance_i = logit_y − ``softmax_bias`` exactly (up to float round-off): every rule except the softmax maps a
layer's relevance onto its inputs without loss (linear maps with the normalisers and act(x)/x held constant are
Euler-homogeneous of degree 1, the halved bilinear products of degree 2), and the softmax's Taylor residual is what
``softmax_bias`` sums. The paper's "near conservation" is the statement that this residual is small.

**Memory.** The attention's backward needs each layer's n × n probabilities. By default they are not kept: the
attention runs as one autograd function that saves q, k and v only and recomputes the probabilities in blocks of
query rows in its backward, applying the rules above block by block (every rule acts row by row, so the blocks give
the same numbers; tested against the materialised form in fp64), so memory grows like n. ``attention="materialized"``
keeps them (layers × heads × n² values: +12.4 GB at n = 2048 on SmolLM2).

The model is switched to the ``"heat_attnlrp"`` attention function, its norms and MLP activations are wrapped, and
its parameters stop requiring gradients only inside :func:`attnlrp_rules`; everything is restored afterwards.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.lm.architectures import ACT_NAMES, MLP_NAMES, check_supported
from heat_module.lm.forward import next_token_logits

ATTN_IMPLEMENTATION = "heat_attnlrp"
OBJECTIVES = ("logit", "logprob")
ATTENTIONS = ("blockwise", "materialized")
#: entries of one (B, H, rows, n_k) block temporary of the blockwise attention (the backward holds about six)
BLOCK_ELEMENTS = 2**22
_state = threading.local()


# ---------------------------------------------------------------------------------------------------- rules
class _DivideGradient(torch.autograd.Function):
    """Identity forward, gradient divided by ``factor`` (uniform rule, eq. 7; lxt ``divide_gradient``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad / ctx.factor, None


def divide_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` with its incoming gradient divided by ``factor``."""
    return _DivideGradient.apply(x, factor)


class _IdentityRule(torch.autograd.Function):
    """y = fn(x) element-wise with ∂̃y/∂x = fn(x)/x, 0 where x = 0 (identity rule, eq. 9; lxt
    ``identity_rule_implicit``)."""

    @staticmethod
    def forward(ctx, fn, x: torch.Tensor) -> torch.Tensor:
        y = fn(x)
        ctx.save_for_backward(torch.where(x != 0, y / torch.where(x != 0, x, 1), 0))
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ratio,) = ctx.saved_tensors
        return None, grad * ratio


def identity_rule(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` (element-wise) whose gradient is ``fn(x) / x``."""
    return _IdentityRule.apply(fn, x)


class _SoftmaxRule(torch.autograd.Function):
    """s = softmax(z + mask) with the AttnLRP softmax rule, which in Gradient×Input form is the softmax
    gradient; the backward adds each example's absorbed relevance Σ_rows (Σ_j s_j ĝ_j − Σ_j z_j ∂̃_j) to ``bias``."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, mask: torch.Tensor | None, bias: list) -> torch.Tensor:
        s = torch.softmax(z if mask is None else z + mask, dim=-1)
        ctx.save_for_backward(z, s)
        ctx.bias = bias
        return s

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, s = ctx.saved_tensors
        r_out = (s * grad).sum(-1, keepdim=True)  # (B, H, n, 1): Σ_j R_j^l
        dz = s * (grad - r_out)  # x_i (R_i − s_i Σ_j R_j) / x_i
        absorbed = r_out.flatten(1).sum(-1) - (z * dz).flatten(1).sum(-1)
        ctx.bias.append(absorbed.detach())
        return dz, None, None


def attnlrp_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``"heat_attnlrp"`` attention function (transformers' ``AttentionInterface`` signature): blockwise
    (:class:`_BlockwiseAttention`, memory linear in n) unless :func:`attnlrp_rules` was entered with
    ``attention="materialized"`` (:func:`attnlrp_attention_materialized`).

    Args: query (B, H, n, d_h) post-RoPE, key/value (B, H_kv, n_k, d_h), attention_mask (B, 1, n, n_k) additive.
    Returns: output (B, n, H, d_h) in the query's dtype and ``None`` for the probabilities (blockwise) or the
    probabilities (B, H, n, n_k) (materialized). Dropout is never applied; the sliding window is in the mask.
    """
    if getattr(_state, "attention", "blockwise") == "materialized":
        return attnlrp_attention_materialized(module, query, key, value, attention_mask, scaling, dropout, softcap,
                                              sliding_window, **kwargs)
    dtype = query.dtype
    work = torch.promote_types(dtype, torch.float32)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    q, k, v = query.to(work), key.to(work), value.to(work)
    mask = attention_mask[..., : k.shape[-2]].to(work) if attention_mask is not None else None
    bias = getattr(_state, "bias", None)
    block = getattr(_state, "block_size", None) or attention_block_rows(q.shape[0], q.shape[1], k.shape[-2])
    out = _BlockwiseAttention.apply(q, k, v, mask, scaling, softcap, block, bias if bias is not None else [])
    return out.transpose(1, 2).contiguous().to(dtype), None


def attention_block_rows(batch: int, heads: int, keys: int, elements: int = BLOCK_ELEMENTS) -> int:
    """Query rows per block of the blockwise AttnLRP attention: as many as keep one (B, H, rows, n_k) block
    temporary within ``elements`` entries (at least 1)."""
    return max(1, elements // max(1, batch * heads * keys))


def attnlrp_attention_materialized(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AttnLRP attention that keeps the (B, H, n, n_k) probabilities for the backward (memory ∝ layers·heads·n²):
    the rules written with autograd, the reference :func:`attnlrp_attention_forward` is tested against, and
    ``AttnLRP(attention="materialized")``.

    Args: query (B, H, n, d_h) post-RoPE, key/value (B, H_kv, n_k, d_h), attention_mask (B, 1, n, n_k) additive.
    Returns: output (B, n, H, d_h) in the query's dtype and probabilities (B, H, n, n_k). Dropout is never applied;
    the sliding window is in the mask.
    """
    dtype = query.dtype
    work = torch.promote_types(dtype, torch.float32)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    q = divide_gradient(query.to(work), 2.0)  # q·kᵀ: half to q, half to k
    k = divide_gradient(key.to(work), 2.0)
    v = divide_gradient(value.to(work), 2.0)  # A·v: half to v, half to A (below)
    n_rep = q.shape[1] // k.shape[1]
    if n_rep > 1:  # repeat_kv: query head h reads kv head h // n_rep
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
    z = torch.matmul(q, k.transpose(2, 3)) * scaling
    if softcap is not None:
        z = identity_rule(torch.tanh, z / softcap) * softcap
    mask = attention_mask[..., : k.shape[-2]].to(work) if attention_mask is not None else None
    bias = getattr(_state, "bias", None)
    probs = _SoftmaxRule.apply(z, mask, bias if bias is not None else [])
    out = torch.matmul(divide_gradient(probs, 2.0), v)
    return out.transpose(1, 2).contiguous().to(dtype), probs.to(dtype)


class _BlockwiseAttention(torch.autograd.Function):
    """softmax(z + mask)·v with z = q·kᵀ·scaling (soft-capped if set) under the AttnLRP rules, computed in blocks of
    query rows in both directions: the forward keeps q, k, v (linear in n), never the (B, H, n, n_k) probabilities;
    the backward recomputes each block's probabilities and applies, per block, exactly the rules of
    :func:`attnlrp_attention_materialized` (halved gradients at q, k, v and A, the softmax rule with its absorbed
    relevance, the identity rule through the soft-cap). Every rule acts row by row, so the blocks give the same
    numbers as the whole matrix."""

    @staticmethod
    def forward(ctx, q, k, v, mask, scaling, softcap, block, bias):
        ctx.save_for_backward(q, k, v, mask)
        ctx.scaling, ctx.softcap, ctx.block, ctx.bias = scaling, softcap, block, bias
        n_rep = q.shape[1] // k.shape[1]
        kr, vr = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        for r0 in range(0, q.shape[2], block):
            rows = slice(r0, r0 + block)
            _, s = _block_probs(q[:, :, rows], kr, mask, rows, scaling, softcap)
            out[:, :, rows] = torch.matmul(s, vr)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, mask = ctx.saved_tensors
        scaling, softcap, block = ctx.scaling, ctx.softcap, ctx.block
        n_rep = q.shape[1] // k.shape[1]
        kr, vr = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        dq = torch.empty_like(q)
        dkr, dvr = torch.zeros_like(kr), torch.zeros_like(vr)
        absorbed = torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
        for r0 in range(0, q.shape[2], block):
            rows = slice(r0, r0 + block)
            g = grad[:, :, rows]
            u, s = _block_probs(q[:, :, rows], kr, mask, rows, scaling, softcap)
            z = u if softcap is None else torch.tanh(u / softcap) * softcap  # the pre-mask logits
            dvr += torch.matmul(s.transpose(2, 3), g)  # A·v: the plain gradient at v (halved below)
            g_s = torch.matmul(g, vr.transpose(2, 3)) / 2.0  # ... and half of it at A
            r_out = (s * g_s).sum(-1, keepdim=True)  # softmax rule: Σ_j R_j^l per row
            dz = s * (g_s - r_out)
            absorbed += r_out.flatten(1).sum(-1) - (z * dz).flatten(1).sum(-1)
            if softcap is not None:  # identity rule through c·tanh(u/c): ∂̃ = tanh(u/c)/(u/c)
                t = u / softcap
                dz = dz * torch.where(t != 0, torch.tanh(t) / torch.where(t != 0, t, 1), 0)
            du = dz * scaling
            dq[:, :, rows] = torch.matmul(du, kr) / 2.0  # q·kᵀ: half to q, half to k
            dkr += torch.matmul(du.transpose(2, 3), q[:, :, rows])
        ctx.bias.append(absorbed.detach())
        B, H, n_k = k.shape[0], k.shape[1], k.shape[2]
        dk = dkr.view(B, H, n_rep, n_k, -1).sum(2) / 2.0
        dv = dvr.view(B, H, n_rep, n_k, -1).sum(2) / 2.0
        return dq, dk, dv, None, None, None, None, None


def _block_probs(q_rows, kr, mask, rows, scaling, softcap):
    """(u, s) of one block of query rows: u = q·kᵀ·scaling (B, H, r, n_k), s its masked softmax after the
    soft-cap."""
    u = torch.matmul(q_rows, kr.transpose(2, 3)) * scaling
    z = u if softcap is None else torch.tanh(u / softcap) * softcap
    return u, torch.softmax(z if mask is None else z + mask[:, :, rows], dim=-1)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, attnlrp_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


# ---------------------------------------------------------------------------------------------------- module rules
def _norm_forward(module: nn.Module, original):
    """A forward for a ``*RMSNorm`` / ``*LayerNorm`` module whose gradient treats the normaliser as constant."""
    name = type(module).__name__
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if not isinstance(eps, (int, float)):
        raise TypeError(f"Expected the norm {name} to have a float `eps` or `variance_epsilon`, got {eps!r}")
    rms = name.endswith("RMSNorm")

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        y = original(x, *args, **kwargs)
        work = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(work)
        if rms:
            with torch.no_grad():  # the gain (w, or Gemma's 1 + w), read off the module itself
                gain = original(torch.ones_like(x[..., :1, :] if x.dim() > 1 else x)).to(work) * (1.0 + eps) ** 0.5
            scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps).detach()
            lin = xf * scale * gain
        else:
            centred = xf - xf.mean(-1, keepdim=True)
            std = (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt().detach()
            lin = centred / std
            if getattr(module, "weight", None) is not None:
                lin = lin * module.weight.to(work)
            if getattr(module, "bias", None) is not None:
                lin = lin + module.bias.to(work)
        lin = lin.to(y.dtype)
        return lin + (y - lin).detach()  # the module's own value, the constant-normaliser gradient

    return forward


def _act_forward(original):
    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return identity_rule(lambda t: original(t, *args, **kwargs), x)

    return forward


def _halve_input(module: nn.Module, args: tuple) -> tuple:
    return (divide_gradient(args[0], 2.0), *args[1:])


def _is_projection(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _mlp_plan(mlp: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(activation module, module whose input is the gated product or None) of an MLP, or ``TypeError``."""
    name = type(mlp).__name__
    act = next((getattr(mlp, a) for a in ACT_NAMES if isinstance(getattr(mlp, a, None), nn.Module)), None)
    if act is None:
        raise TypeError(
            f"Expected the MLP {name} to have an activation module named one of {list(ACT_NAMES)}, got none; "
            "AttnLRP cannot apply its activation rule to it"
        )
    gated = hasattr(mlp, "gate_up_proj") or (hasattr(mlp, "gate_proj") and hasattr(mlp, "up_proj"))
    if gated:
        down = getattr(mlp, "down_proj", None)
        if not isinstance(down, nn.Module):
            raise TypeError(f"Expected the gated MLP {name} to have a `down_proj`, got none")
        return act, down
    projections = [m for m in mlp.children() if _is_projection(m)]
    if len(projections) != 2:
        raise TypeError(
            f"Expected an MLP with gate_proj/up_proj/down_proj, a fused gate_up_proj/down_proj or exactly two "
            f"projections around one activation, got {name} with {len(projections)} projections; AttnLRP does not "
            "know where its products are"
        )
    return act, None


@contextlib.contextmanager
def attnlrp_rules(model: nn.Module, attention: str = "blockwise",
                  block_size: int | None = None) -> Iterator[list[torch.Tensor]]:
    """Inside the block ``model``'s backward is AttnLRP's modified gradient (see the module docstring).

    ``attention``: ``"blockwise"`` (memory linear in n; ``block_size`` query rows per block, ``None``:
    :func:`attention_block_rows`) or ``"materialized"`` (keeps every layer's n × n probabilities; same values).

    Yields a list to which every backward appends, per attention call, the (B,) relevance its softmax absorbed.
    The model's attention implementation, module forwards, training flag and ``requires_grad`` flags are restored
    on exit.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"Expected a transformers PreTrainedModel, got {type(model).__name__}")
    check_supported(model)  # its own attention replaces the model's: only on architectures shown exact
    if attention not in ATTENTIONS:
        raise ValueError(f"Expected attention to be one of {list(ATTENTIONS)}, got {attention!r}")
    if block_size is not None and (not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1):
        raise ValueError(f"Expected block_size to be an integer >= 1 or None, got {block_size!r}")
    norms, acts, downs, seen = [], [], [], set()
    for path, module in model.named_modules():
        cls = type(module).__name__
        if cls.endswith("RMSNorm") or cls.endswith("LayerNorm"):
            norms.append(module)
        elif cls.endswith("MLP") or path.rsplit(".", 1)[-1] in MLP_NAMES:
            act, down = _mlp_plan(module)
            if id(act) not in seen:
                seen.add(id(act))
                acts.append(act)
            if down is not None:
                downs.append(down)
    patched = [(m, m.__dict__.get("forward")) for m in norms + acts]
    forwards = [_norm_forward(m, m.forward) for m in norms] + [_act_forward(m.forward) for m in acts]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    previous = config._attn_implementation
    training = model.training
    bias: list[torch.Tensor] = []
    outer = (getattr(_state, "bias", None), getattr(_state, "attention", "blockwise"),
             getattr(_state, "block_size", None))
    handles = []
    _register()
    try:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
        for (module, _), forward in zip(patched, forwards):
            module.forward = forward
        handles = [down.register_forward_pre_hook(_halve_input) for down in downs]
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        _state.bias, _state.attention, _state.block_size = bias, attention, block_size
        yield bias
    finally:
        _state.bias, _state.attention, _state.block_size = outer
        model.train(training)
        for p, flag in flags:
            p.requires_grad_(flag)
        for handle in handles:
            handle.remove()
        for module, own in patched:
            if own is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = own
        model.set_attn_implementation(previous)


# ---------------------------------------------------------------------------------------------------- method
@register_method("attnlrp", title="AttnLRP")
class AttnLRP(Attributor):
    """AttnLRP relevance of each context token for the target (https://arxiv.org/abs/2402.05602).

    One forward and one backward under the AttnLRP rules; score_i = Σ_d x_{i,d} ∂̃out/∂x_{i,d}.

    Options:
        objective: ``"logit"`` (default; the paper explains the logit, and conservation holds for it) or
            ``"logprob"`` (log P(y | X), the quantity the other baselines explain; the log-softmax over the vocabulary
            gets the plain gradient).
        attention: ``"blockwise"`` (default: the attention's backward recomputes the probabilities in blocks of
            query rows, so memory grows like n) or ``"materialized"`` (every layer's n × n probabilities are kept for
            the backward: memory ∝ layers·heads·n², +12.4 GB at n = 2048 on SmolLM2). Same scores.
        block_size: query rows per block of the blockwise attention; ``None`` (default) picks them so one block
            temporary has at most :data:`BLOCK_ELEMENTS` entries.

    Extras per example: ``logit``, ``logprob``, ``softmax_bias`` (the relevance the attention softmaxes absorbed; with
    the logit objective and no biases, Σ_i score_i = logit − softmax_bias).
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, objective: str = "logit",
                 attention: str = "blockwise", block_size: int | None = None, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if objective not in OBJECTIVES:
            raise ValueError(f"Expected objective to be one of {list(OBJECTIVES)}, got {objective!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"Expected attention to be one of {list(ATTENTIONS)}, got {attention!r}")
        if block_size is not None and (not isinstance(block_size, int) or isinstance(block_size, bool)
                                       or block_size < 1):
            raise ValueError(f"Expected block_size to be an integer >= 1 or None, got {block_size!r}")
        self.objective = objective
        self.attention = attention
        self.block_size = block_size

    def options(self) -> dict:
        return {"objective": self.objective}  # attention and block_size change memory, not the scores

    def _attribute_batch(self, input_ids, attention_mask, target_ids):
        results = super()._attribute_batch(input_ids, attention_mask, target_ids)
        wanted = [None if target_ids is None else target_ids[b] for b in range(len(results))]
        greedy = any(t is None or int(t) < 0 for t in wanted)  # the base class then runs one more forward
        for res in results:
            res.cost = {"forward_passes": 1 + int(greedy), "gradients": 1}
        return results

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        rows = torch.arange(inputs_embeds.shape[0], device=inputs_embeds.device)
        with attnlrp_rules(self.model, self.attention, self.block_size) as absorbed, torch.enable_grad():
            x = inputs_embeds.detach().requires_grad_(True)
            logits = next_token_logits(self.model, x, attention_mask)
            logit = logits[rows, targets.to(logits.device)]
            logprob = torch.log_softmax(logits, -1)[rows, targets.to(logits.device)]
            out = logit if self.objective == "logit" else logprob
            (grad,) = torch.autograd.grad(out.sum(), x)
        logit, logprob = logit.detach(), logprob.detach()
        scores = (x.detach().float() * grad.float()).sum(-1) * attention_mask.float()
        bias = torch.stack(absorbed).sum(0) if absorbed else torch.zeros_like(logit)
        extras = [
            {"logit": float(logit[b]), "logprob": float(logprob[b]), "softmax_bias": float(bias[b])}
            for b in range(len(rows))
        ]
        return scores, extras

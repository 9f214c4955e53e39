"""Tiny random decoder-only models and a tiny word-level tokenizer, for tests and examples.

``tiny_model(arch)`` builds a randomly initialised model of one of :data:`ARCHITECTURES` with a few layers
and a small vocabulary, in fp32 eval mode, deterministically from ``seed``. ``tiny_tokenizer()`` is a real
``PreTrainedTokenizerFast`` (word level) over a small vocabulary written for this project.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heat_module.lm.architectures import TINY_CONFIG
from heat_module.lm.forward import embed, make_forward_fn, next_token_logits

ARCHITECTURES = ("gpt2", "llama", "qwen2", "mistral", "gemma3", "gpt_neox", "gptj", "phi3")
#: architectures with more than causal attention: soft-capping and sliding windows (gemma2; gemma3's
#: window is 4 here, smaller than most test contexts), learned sinks (gpt_oss, eager only), chunked attention
#: (llama4 text model, chunks of 4), a hybrid with short convolutions (lfm2) and multi-head latent attention
#: (deepseek_v3, value head size 6 ≠ query head size 12)
EXTRA_ARCHITECTURES = ("gemma2", "gemma3_sliding", "gpt_oss", "llama4", "lfm2", "deepseek_v3")
#: tiny window / chunk of the architectures above
TINY_BAND = 4
_EAGER_ONLY = ("gemma2", "gpt_oss")  # transformers refuses sdpa for them: tiny_model builds them eager

_WORDS = tuple((
    "the a an of to in on and is was were it he she they we you i my your her his their this that "
    "cat dog bird fish tree park river hill house road car bike book pen cup tea milk bread pizza apple "
    "red blue green big small old new warm cold happy sad fast slow "
    "ate saw ran sat made took gave found lost ordered cut opened closed read wrote "
    "knife fork door window hat coat rain sun wind snow stuck under over after before because "
    "question answer why what where who leaves roots plant light water paris france capital city"
).split())
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def tiny_tokenizer():
    """A word-level fast tokenizer over ~130 words (vocabulary size :data:`TINY_VOCAB`)."""
    # lazy imports here and below: transformers / tokenizers are heavy and only needed when a model is built
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + _WORDS + (".", ",", "?", "!"))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    fast.padding_side = "left"
    return fast


TINY_VOCAB = len(SPECIALS) + len(_WORDS) + 4


def _alternating(layers: int) -> list[str]:
    return [("sliding_attention", "full_attention")[i % 2] for i in range(layers)]


def tiny_config(arch: str, vocab_size: int = TINY_VOCAB, layers: int = 2, hidden: int = 32, heads: int = 4,
                kv_heads: int = 2, max_positions: int = 128):
    """A transformers config of ``arch`` with tiny dimensions (GQA where the architecture has it)."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    if arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_positions, **common)
    elif arch == "gptj":
        cfg = tf.GPTJConfig(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_positions,
                            rotary_dim=hidden // heads // 2, **common)
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                               intermediate_size=2 * hidden, max_position_embeddings=max_positions,
                               rotary_pct=0.5, **common)
    elif arch == "gemma2":
        cfg = tf.Gemma2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv_heads, head_dim=hidden // heads, intermediate_size=2 * hidden,
                              max_position_embeddings=max_positions, sliding_window=TINY_BAND,
                              query_pre_attn_scalar=hidden // heads, attn_logit_softcapping=2.0,
                              final_logit_softcapping=30.0,
                              layer_types=_alternating(layers), **common)
    elif arch == "gpt_oss":
        cfg = tf.GptOssConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv_heads, head_dim=hidden // heads, intermediate_size=hidden,
                              num_local_experts=4, num_experts_per_tok=2, sliding_window=TINY_BAND,
                              max_position_embeddings=max_positions,
                              layer_types=_alternating(layers), **common)
    elif arch == "llama4":
        cfg = tf.Llama4TextConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                  num_key_value_heads=kv_heads, head_dim=hidden // heads, intermediate_size=hidden,
                                  intermediate_size_mlp=2 * hidden, num_local_experts=2, num_experts_per_tok=1,
                                  attention_chunk_size=TINY_BAND, no_rope_layers=[1] * (layers - 1) + [0],
                                  max_position_embeddings=max_positions, **common)
    elif arch == "lfm2":
        cfg = tf.Lfm2Config(hidden_size=hidden, num_hidden_layers=max(layers, 3), num_attention_heads=heads,
                            num_key_value_heads=kv_heads, intermediate_size=2 * hidden, block_auto_adjust_ff_dim=False,
                            max_position_embeddings=max_positions,
                            layer_types=["conv", "full_attention", "conv"] + ["full_attention"] * (max(layers, 3) - 3),
                            **common)
    elif arch == "deepseek_v3":
        cfg = tf.DeepseekV3Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                  num_key_value_heads=heads, intermediate_size=2 * hidden, moe_intermediate_size=hidden,
                                  n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
                                  first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=4,
                                  qk_nope_head_dim=8, v_head_dim=6, max_position_embeddings=max_positions, **common)
    else:
        klass = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig,
                 "gemma3": tf.Gemma3TextConfig, "gemma3_sliding": tf.Gemma3TextConfig, "phi3": tf.Phi3Config}.get(arch)
        if klass is None:
            raise ValueError(f"Expected arch to be one of {list(ARCHITECTURES + EXTRA_ARCHITECTURES)}, got {arch!r}")
        extra = {}
        if arch in ("gemma3", "gemma3_sliding"):
            extra = dict(head_dim=hidden // heads, sliding_window=64, query_pre_attn_scalar=hidden // heads)
        if arch == "gemma3_sliding":
            extra.update(sliding_window=TINY_BAND, layer_types=["sliding_attention", "full_attention"])
        if arch == "phi3":
            extra = dict(original_max_position_embeddings=max_positions)
        cfg = klass(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    num_key_value_heads=kv_heads, intermediate_size=2 * hidden,
                    max_position_embeddings=max_positions, **extra, **common)
    return cfg


_SWEEP_HIDDEN = 32
#: generic tiny sizes by config key (width 32, 2 layers, 4 heads, small MoE / MLA / SSM sizes; windows, chunks
#: and Llama 4's floor_scale of 4, below the sweep's contexts, so they take effect)
_SWEEP_SIZES = {
    "num_experts_per_token": 2, "num_expert_group": 1, "linear_head_dim": 8, "linear_num_heads": 4,
    "n_mamba_heads": 4, "mamba_headdim": 16, "shared_experts_intermediate_size": 32, "num_kv_shared_layers": 0,
    "hidden_size_per_layer_input": 8, "layer_group_size": 2, "global_head_dim": 8,
    "hidden_size": _SWEEP_HIDDEN, "n_embd": _SWEEP_HIDDEN, "d_model": _SWEEP_HIDDEN, "n_embed": _SWEEP_HIDDEN,
    "model_dim": _SWEEP_HIDDEN, "dim": _SWEEP_HIDDEN, "word_embed_proj_dim": _SWEEP_HIDDEN,
    "embedding_size": _SWEEP_HIDDEN, "num_hidden_layers": 2, "n_layer": 2, "num_layers": 2, "n_layers": 2,
    "decoder_layers": 2, "encoder_layers": 2, "num_attention_heads": 4, "n_head": 4, "num_heads": 4, "n_heads": 4,
    "decoder_attention_heads": 4, "encoder_attention_heads": 4, "num_key_value_heads": 2, "num_kv_heads": 2,
    "n_kv_heads": 2, "multi_query_group_num": 2, "head_dim": 8, "kv_channels": 8, "attention_head_dim": 8,
    "intermediate_size": 64, "ffn_dim": 64, "n_inner": 64, "ffn_hidden_size": 64, "decoder_ffn_dim": 64,
    "encoder_ffn_dim": 64, "d_ff": 64, "intermediate_size_mlp": 64, "dim_ff": 64, "moe_intermediate_size": 32,
    "expert_intermediate_size": 32, "shared_expert_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32,
    "shared_intermediate_size": 32, "moe_ffn_hidden_size": 32, "num_experts": 4, "n_routed_experts": 4,
    "num_local_experts": 4, "moe_num_experts": 4, "n_experts": 4, "num_experts_per_tok": 2, "moe_k": 2, "moe_topk": 2,
    "top_k": 2, "num_selected_experts": 2, "n_shared_experts": 1, "n_group": 1, "topk_group": 1,
    "num_shared_experts": 1, "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 4, "qk_nope_head_dim": 8,
    "v_head_dim": 6, "qk_head_dim": 12, "max_position_embeddings": 128, "n_positions": 128, "n_ctx": 128,
    "max_seq_len": 128, "sliding_window": 4, "attention_window": 4, "window_size": 4, "attention_chunk_size": 4,
    "local_attention_window_len": 4, "floor_scale": 4, "index_topk": 4, "index_n_heads": 2, "index_head_dim": 8,
    "ssm_state_size": 8, "mamba_d_state": 8, "state_size": 8, "mamba_n_heads": 4, "mamba_num_heads": 4,
    "mamba_d_head": 16, "mamba_head_dim": 16, "mamba_d_ssm": 64, "mamba_n_groups": 1, "n_groups": 1,
    "mamba_dt_rank": 4, "time_step_rank": 4, "mamba_chunk_size": 4, "chunk_size": 4, "linear_num_key_heads": 2,
    "linear_num_value_heads": 4, "linear_key_head_dim": 8, "linear_value_head_dim": 8, "first_k_dense_replace": 1,
    "d_head": 8, "rotary_dim": 4, "attention_hidden_size": 32, "embedding_dim": _SWEEP_HIDDEN, "num_dense_layers": 1,
    "attention_window_size": 4,
}
_KEEP_NONE = {"q_lora_rank", "sliding_window", "attention_chunk_size", "index_topk", "attention_window"}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers")


def _layer_count(d: dict) -> tuple[str | None, int | None]:
    for k in _LAYER_KEYS:
        if isinstance(d.get(k), int):
            return k, d[k]
    return None, None


def _shrink(d: dict, vocab: int) -> dict:
    """A config dict with the generic tiny sizes; per-layer lists keep one layer of each type (at least two)."""
    out = {}
    lk, L = _layer_count(d)
    keep = None
    if L:
        types = d.get("layer_types") or d.get("layers_block_type") or d.get("block_types")
        if isinstance(types, (list, tuple)) and len(types) == L:
            seen = {}
            for i, t in enumerate(types):
                seen.setdefault(str(t), i)
            keep = sorted(seen.values())
        else:
            keep = [0, 1]
        if len(keep) < 2:
            keep = sorted(set(keep) | {0, 1} if L > 1 else keep)
        keep = [i for i in keep if i < L]
    for k, v in d.items():
        if k.startswith("_") or k in ("architectures", "transformers_version", "id2label", "label2id"):
            continue
        if isinstance(v, dict) and "model_type" in v:
            out[k] = _shrink(v, vocab)
        elif k == "per_layer_config" and isinstance(v, dict) and keep is not None:  # {layer index: changes}
            out[k] = {f"{keep.index(int(i)):02d}": {kk: min(vv, _SWEEP_SIZES.get(kk, vv)) if isinstance(vv, int)
                                                   else vv for kk, vv in c.items()}
                      for i, c in v.items() if int(i) in keep}
            if "kv_lora_rank" in d:  # multi-head latent attention: as many kv heads as query heads
                for c in out[k].values():
                    if "num_attention_heads" in c:
                        c["num_key_value_heads"] = c["num_attention_heads"]
        elif k == "vocab_size_per_layer_input" and isinstance(v, int):
            out[k] = vocab
        elif k in _SWEEP_SIZES and isinstance(v, int) and not isinstance(v, bool):
            out[k] = min(v, _SWEEP_SIZES[k]) if k not in ("first_k_dense_replace",) else min(v, 1)
            if k in _LAYER_KEYS and keep is not None:
                out[k] = len(keep)
        elif k in _SWEEP_SIZES and v is None:
            if k not in _KEEP_NONE:
                out[k] = _SWEEP_SIZES[k]
        elif k == "vocab_size" and isinstance(v, int):
            out[k] = vocab
        elif keep is not None and isinstance(v, (list, tuple)) and len(v) == L and L > 2:
            out[k] = [v[i] for i in keep]
        elif keep is not None and isinstance(v, str) and len(v) == L and L > 2:
            out[k] = "".join(v[i] for i in keep)
        elif k in ("pad_token_id",) and v is not None:
            out[k] = 0
        elif k in ("bos_token_id",) and isinstance(v, int):
            out[k] = 2
        elif k in ("eos_token_id",) and v is not None:
            out[k] = 3
        else:
            out[k] = v
    return out


def tiny_config_for(model_type: str, vocab_size: int = TINY_VOCAB, **changes):
    """A tiny config of any ``model_type`` transformers knows: the defaults of its config class shrunk by key
    (:data:`_SWEEP_SIZES`), plus the entry of :data:`heat_module.lm.architectures.TINY_CONFIG`, plus ``changes``."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    vocab = vocab_size
    klass = CONFIG_MAPPING[model_type]
    d = klass().to_dict()
    small = _shrink(d, vocab)
    small.pop("model_type", None)
    if "kv_lora_rank" in small:
        small["head_dim"] = small.get("qk_rope_head_dim", 4)
        small["num_key_value_heads"] = small.get("num_attention_heads", 4)
    small.update(TINY_CONFIG.get(model_type, {}))
    small.update(changes)
    return klass(**small)


def tiny_model(arch: str = "llama", seed: int = 0, attn_implementation: str = "sdpa", **kwargs) -> nn.Module:
    """A randomly initialised tiny causal LM of ``arch`` (fp32, eval mode, no grad on parameters); architectures
    without sdpa support (gemma2, gpt_oss) are built with eager attention."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, **kwargs)
    if arch in _EAGER_ONLY and attn_implementation == "sdpa":
        attn_implementation = "eager"
    torch.manual_seed(seed)
    # experts as a loop ("eager"): the grouped-mm kernels of MoE layers refuse fp64
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation, dtype=torch.float32,
                                             experts_implementation="eager")
    with torch.no_grad():  # random init of some archs is tiny; widen it so attention is not uniform
        for name, p in model.named_parameters():
            if p.dim() == 2 and "emb" not in name and "wte" not in name and "wpe" not in name:
                p.normal_(0.0, 0.35 / p.shape[-1] ** 0.5 * 4)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tiny_metric_example(arch: str = "llama") -> tuple[Callable, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One example for the metrics' examples: ``(forward_fn, inputs_embeds (1, 5, d), scores (1, 5), target_ids
    (1,))``, the tiny model of ``arch`` (``forward_fn = make_forward_fn(model)``) on "the cat sat on the" with
    target "road" and fixed scores."""
    model, tok = tiny_model(arch), tiny_tokenizer()
    ids = tok("the cat sat on the", return_tensors="pt")["input_ids"]
    target = torch.tensor(tok.convert_tokens_to_ids(["road"]))
    with torch.no_grad():
        x = embed(model, ids)
    return make_forward_fn(model), x, torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1]]), target


def tiny_curated_examples() -> list[dict]:
    """One curated example (:func:`heat_module.data.build_curated_examples`) in the tiny vocabulary: a narrative
    distractor, a support whose important word is "water", and its question."""
    from heat_module.data.build_curated import build_curated_examples  # lazy: data readers are a later layer

    support = {"support": "the plant took water in the sun .", "question": "what did the plant take ?",
               "answer": "water", "important_words": ["water"]}
    return build_curated_examples(["the cat sat on the hill ."], [support])


def tiny_jsonl(rows: list[dict], name: str = "data.jsonl") -> str:
    """Write ``rows`` as JSON lines to ``name`` in a new temporary folder; the file's path."""
    path = Path(tempfile.mkdtemp()) / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def tiny_eval_config(folder: str | os.PathLike, **overrides: Any) -> Any:
    """An :class:`~heat_module.evaluation.config.EvalConfig` for examples: the tiny llama model on two prompts
    (written to ``folder/prompts.txt`` as the ``wikibio`` dataset), the random baseline and no HEAT rows, small
    metric settings, results and report in ``folder``; ``overrides`` replace any field."""
    from heat_module.evaluation.config import EvalConfig, parse_methods  # lazy: the evaluation is a later layer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("the cat sat on the\nthe dog ran to the\n", encoding="utf-8")
    settings = dict(model=(tiny_model("llama"), tiny_tokenizer()), datasets=["wikibio"],
                    paths={"wikibio": str(folder / "prompts.txt")}, limit=2, num_masks=2, bootstrap=10, heat=False,
                    baselines=parse_methods(["random"]), out_dir=str(folder), figures=False, progress=False)
    return EvalConfig(**{**settings, **overrides})


def grad_x_input_fn(model: nn.Module):
    """An embedding-level ``attribute_fn`` for the Sensitivity metric: |∇_x log P(y) · x| per token.

    ``attribute(inputs_embeds (B, n, d), attention_mask (B, n), target_ids (B,)) -> (B, n)``; it enables autograd
    itself, since torchmetrics' ``update`` runs without it.
    """
    def attribute(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = inputs_embeds.detach().requires_grad_(True)
            logp = torch.log_softmax(next_token_logits(model, x, attention_mask), -1)
            (grad,) = torch.autograd.grad(logp.gather(1, target_ids[:, None]).sum(), x)
        return (grad * x).sum(-1).abs()

    return attribute

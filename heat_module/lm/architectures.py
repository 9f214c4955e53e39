"""What HEAT knows about transformers architectures, in one table, and :func:`check_supported`.

HEAT computes a model's attention itself (captures, HVPs, prefix cache, rollout), so it is exact only on
architectures whose attention path has been shown to match the model's own forward. That evidence is the
architecture sweep (``tests/heat_module/lm/test_architectures_sweep.py``): for every causal-LM entry transformers
ships it builds a tiny random model and compares the logits after install, I, S and M with references computed
through the model's own forward, or checks the refusal below. ``docs/architectures.md`` is generated from it.

- :data:`SUPPORTED`: the ``model_type`` values the sweep shows exact;
- :data:`REFUSED`: the ``model_type`` values HEAT refuses, with the feature it does not support and what to do;
- any other ``model_type`` is refused as unchecked (never guessed);
- the generic rules every supported model is read with: where the decoder layers live (:data:`LAYER_PATHS`), which
  token mixers are not attention (:data:`MIXER_NAMES`, :data:`ATTENTION_TYPES`), the attention output projection
  (:data:`PROJECTION_NAMES`), the MLP and activation modules AttnLRP rewrites (:data:`MLP_NAMES`, :data:`ACT_NAMES`);
- :data:`TINY_CONFIG`: per ``model_type``, the config changes a tiny test model of it needs beyond the generic
  shrinking of :func:`heat_module.testing.tiny_config_for`.

Supporting a new family is one entry here plus its row of the sweep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: where a model keeps its ``nn.ModuleList`` of decoder layers, tried in order
LAYER_PATHS: tuple[str, ...] = (
    "model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers",
    "transformer.blocks", "model.language_model.layers", "language_model.model.layers",
)
#: class names of token-mixing modules that are not attention (LFM2 short convolutions, Mamba / SSM mixers,
#: linear attention / gated delta nets of Qwen3-Next, RWKV, RetNet)
MIXER_NAMES = re.compile(r"Mamba|SSM|Ssm(?!lp)|ShortConv|LinearAttention|DeltaNet|RWKV|Rwkv|Retention|Hyena")
#: ``layer_types`` entries that are softmax attention
ATTENTION_TYPES: tuple[str, ...] = (
    "full_attention", "sliding_attention", "chunked_attention", "attention", "global", "local",
)
#: attribute names of an attention module's output projection W_O, by architecture family
PROJECTION_NAMES: tuple[str, ...] = ("o_proj", "out_proj", "dense", "c_proj", "wo", "Wo", "proj")
#: attribute names of a decoder layer's MLP, and of an MLP's activation module (AttnLRP's rules)
MLP_NAMES: tuple[str, ...] = ("mlp", "feed_forward")
ACT_NAMES: tuple[str, ...] = ("act_fn", "activation_fn", "act")


class UnsupportedArchitecture(TypeError):
    """HEAT refuses this architecture: ``model_type``, the ``feature`` it does not support and the ``advice``."""

    def __init__(self, model_type: str, feature: str, advice: str) -> None:
        self.model_type, self.feature, self.advice = model_type, feature, advice
        super().__init__(f"HEAT does not support model_type={model_type!r}: {feature}. {advice}")


@dataclass(frozen=True)
class Refusal:
    """Why HEAT refuses an architecture.

    Attributes:
        kind: ``"not decoder-only"`` (an encoder with an LM head, or the decoder of an encoder-decoder),
            ``"unsupported"`` (a decoder with a feature HEAT does not handle) or ``"unchecked"`` (no tiny model of
            it could be built for the sweep, so nothing shows HEAT exact on it).
        feature: what HEAT does not support, in words.
        advice: what the user can do.
    """

    kind: str
    feature: str
    advice: str


_ENCODER = Refusal(
    "not decoder-only", "a bidirectional encoder with a language-model head (no causal next-token prediction)",
    "Use a decoder-only causal LM.",
)
_SEQ2SEQ = Refusal(
    "not decoder-only", "the decoder half of an encoder-decoder model (its layers are built to cross-attend to an "
    "encoder; HEAT explains decoder-only causal LMs)", "Use a decoder-only causal LM.",
)
_OWN_ATTENTION = Refusal(
    "unsupported", "attention computed in the model's own code, not through transformers' AttentionInterface, so "
    "HEAT cannot capture its queries, keys and values", "Use an architecture listed in docs/architectures.md.",
)
_NO_ATTENTION = Refusal(
    "unsupported", "no softmax attention layer (state-space / recurrent token mixing): the gate M and the captures "
    "need attention", "Use an attention decoder or a hybrid listed in docs/architectures.md.",
)
_SPARSE_TOPK = Refusal(
    "unsupported", "sparse top-k attention (an indexer picks the keys each query attends; transformers builds that "
    "mask only for eager/sdpa, so under HEAT's attention the model would attend all keys and its logits change)",
    "No HEAT score on this model would be exact; use a dense-attention model.",
)
_UNCHECKED = "No tiny model of it could be built for HEAT's architecture sweep, so nothing shows HEAT exact on it. "
_ADD = "Add it to heat_module/lm/architectures.py once the architecture sweep passes on it."

#: model types the architecture sweep shows exact (logits unchanged by install; I, S, M equal to the references)
SUPPORTED: frozenset[str] = frozenset((
    "afmoe", "apertus", "apertus1p5_text", "arcee", "aria_text", "axk1", "bamba", "beam", "biogpt", "bitnet",
    "codegen", "cohere", "cohere2", "cohere2_moe", "cwm", "deepseek_v2", "deepseek_v3", "diffllama", "dots1", "emu3",
    "ergo", "ernie4_5", "ernie4_5_moe", "exaone", "exaone4", "exaone_moe", "falcon", "flex_olmo", "flint", "fuyu",
    "gemma", "gemma2", "gemma3", "gemma3_text", "glm", "glm4", "glm4_moe", "glm4_moe_lite", "gpt-sw3", "gpt2",
    "gpt_bigcode", "gpt_neox", "gpt_oss", "gptj", "granite", "granite_swa", "granitemoe", "granitemoe_swa",
    "granitemoeshared", "helium", "hunyuan_v1_dense", "hunyuan_v1_moe", "hy_v3", "hyperclovax", "internlm3",
    "iquestcoder", "jais2", "jamba", "kolibri1", "laguna", "lara_mini", "lfm2", "lfm2_moe", "lfm3", "llama",
    "llama4", "llama4_text", "mellum", "mimo_v2_flash", "minicpm3", "minicpm5_moe", "minimax", "minimax_m2",
    "minimax_m3_vl_text", "ministral", "ministral3", "mistral", "mixtral", "mllama", "moss_transcribe_diarize",
    "nanochat", "nemotron", "nemotron_h", "olmo", "olmo2", "olmo3", "olmo_hybrid", "olmoe", "opt", "param2moe",
    "persimmon", "phi", "phi3", "phi4_multimodal", "phimoe", "qwen2", "qwen2_moe", "qwen3", "qwen3_5", "qwen3_5_moe",
    "qwen3_5_moe_text", "qwen3_5_text", "qwen3_moe", "qwen3_next", "recurrent_gemma", "sarvam_mla", "sarvam_moe",
    "seed_oss", "smollm3", "solar_open", "stablelm", "starcoder2", "vaultgemma", "youtu", "zaya",
    # the config model_type of the *ForCausalLM text models of two multimodal entries above (emu3, mllama)
    "emu3_text_model", "mllama_text_model",
    "bailing_hybrid", "falcon_h1", "gemma4_unified_text", "kimi_linear", "modernbert-decoder",
    "granitemoehybrid", "dbrx", "cohere_compass_text",
))

#: model types HEAT refuses, with the reason
REFUSED: dict[str, Refusal] = {
    **{t: _ENCODER for t in (
        "bert", "bert-generation", "big_bird", "camembert", "data2vec-text", "electra", "ernie", "megatron-bert",
        "rembert", "roberta", "roberta-prelayernorm", "roc_bert", "roformer", "xlm", "xlm-roberta", "xlm-roberta-xl",
        "xmod", "xlnet", "reformer",
    )},
    **{t: _SEQ2SEQ for t in (
        "bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart", "mvp", "pegasus", "plbart",
        "prophetnet", "trocr", "whisper", "musicgen", "musicgen_melody",
    )},
    **{t: _OWN_ATTENTION for t in (
        "bloom", "cpmant", "got_ocr2", "gpt_neo", "gpt_neox_japanese", "mpt", "openai-gpt", "xglm",
    )},
    **{t: _NO_ATTENTION for t in ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm")},
    **{t: _SPARSE_TOPK for t in (
        "axk2", "deepseek_v32", "dots3_note", "dots3_note_text", "glm_moe_dsa", "hy_v4", "kolibri1_1", "qwen4_exp",
        "qwen4_exp_text",
    )},
    "deepseek_v4": Refusal(
        "unsupported", "hash-routed mixture of experts (the router reads input_ids, so the model cannot run from the "
        "perturbed input embeddings HEAT feeds it)", "Use a model whose experts are routed from hidden states.",
    ),
    "gemma4_text": Refusal(
        "unsupported", "per-layer input embeddings looked up from input_ids (the model cannot run from the "
        "perturbed input embeddings HEAT feeds it)", "Use a model that runs from inputs_embeds.",
    ),
    "ctrl": Refusal(
        "unsupported", "an attention path that installing HEAT's attention changes (the model's logits differ after "
        "install)", "Use an architecture listed in docs/architectures.md.",
    ),
    "git": Refusal(
        "unsupported", "an image-text model whose text decoder changes its logits under HEAT's attention (the "
        "image prefix goes through its own mask)", "Use a text decoder listed in docs/architectures.md.",
    ),
    "doge": Refusal(
        "unsupported", "a dynamic per-head attention mask (HEAT's kernels and prefix cache rebuild one mask per "
        "layer)", "Use an architecture listed in docs/architectures.md.",
    ),
    **{t: Refusal(
        "unsupported", "an additive attention bias passed to the attention function (position_bias), which HEAT's "
        "own attention does not apply", "Use an architecture listed in docs/architectures.md.",
    ) for t in ("inkling_text", "inkling2_text", "inkling2_loop_text")},
    "jetmoe": Refusal(
        "unsupported", "mixture-of-attention-heads: no output projection W_O (the gate M weighs each head by "
        "‖v W_O‖₁; JetMoe routes heads through per-expert projections)",
        "Use HEATConfig(ablation='transition') (no gate M), or another architecture.",
    ),
    "moshi": Refusal(
        "unsupported", "no output projection W_O (Moshi's per-codebook flexible linear layers have no single "
        "weight)", "Use HEATConfig(ablation='transition') (no gate M), or another architecture.",
    ),
    "blt": Refusal(
        "unsupported", "no single stack of decoder layers (the config has no num_hidden_layers: bytes go through "
        "a local encoder, a global transformer and a local decoder)", "Use a token-level decoder.",
    ),
    "hrm_text": Refusal(
        "unsupported", "decoder layers not found as one list of num_hidden_layers layers (hierarchical "
        "recurrent stacks run several cycles)", "Use an architecture listed in docs/architectures.md.",
    ),
    "longcat_flash": Refusal(
        "unsupported", "decoder layers not found as one list of num_hidden_layers layers (each layer holds two "
        "attention blocks)", "Use an architecture listed in docs/architectures.md.",
    ),
    **{t: Refusal("unchecked", "not checked: its tiny test model could not be built", _UNCHECKED + _ADD) for t in (
        "dory", "gemma3n", "gemma3n_text", "gemma4", "gemma4_assistant",
        "gemma4_unified", "gemma4_unified_assistant", "zamba", "zamba2",
    )},
}

#: per model type, the config changes its tiny test model needs beyond the generic shrinking
#: (:func:`heat_module.testing.tiny_config_for`): layer patterns that keep an attention layer in two layers
TINY_CONFIG: dict[str, dict[str, Any]] = {
    "mamba2": {"head_dim": 16},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    "recurrent_gemma": {"block_types": ["recurrent", "attention"]},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "bamba": {"attn_layer_indices": [1]},
    "falcon_h1": {"mamba_d_head": 16},
    "dots3_note_text": {"head_dim": 12},
    "cohere_compass_text": {"rope_parameters": {t: {"rope_type": "default", "rope_theta": 10000.0}
                                                for t in ("full_attention", "sliding_attention")}},
    "granitemoehybrid": {"layer_types": ["linear_attention", "attention"]},
    "zamba2": {"hybrid_layer_ids": [1]},
    "dbrx": {"attn_config": {"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
             "ffn_config": {"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2}},
}


def _config_of(model_or_config: Any) -> Any:
    config = getattr(model_or_config, "config", None)
    if config is not None:
        return config
    if hasattr(model_or_config, "model_type") and hasattr(model_or_config, "to_dict"):
        return model_or_config
    raise TypeError(
        f"Expected a transformers PreTrainedModel (or its config), got {type(model_or_config).__name__}"
    )


def verdict(model_type: str) -> Refusal | None:
    """``None`` when the sweep shows HEAT exact on ``model_type``, else the :class:`Refusal`."""
    if model_type in SUPPORTED:
        return None
    refusal = REFUSED.get(model_type)
    if refusal is not None:
        return refusal
    return Refusal("unchecked", "not in HEAT's architecture table (the architecture sweep has not checked it)",
                   "Check it with the architecture sweep and " + _ADD[0].lower() + _ADD[1:])


def check_supported(model_or_config: Any) -> None:
    """Raise :class:`UnsupportedArchitecture` (a ``TypeError``) unless HEAT is shown exact on this architecture.

    Reads only the config (``model_type``, ``is_encoder_decoder``) and, for a model, whether its attention goes
    through transformers' AttentionInterface: nothing is changed, so :func:`heat_module.lm.capture.install` calls it
    before it touches the model.

    Example:
        >>> from heat_module import check_supported
        >>> from heat_module.testing import tiny_config
        >>> check_supported(tiny_config("llama"))  # shown exact: returns None
        >>> from transformers import BertConfig
        >>> check_supported(BertConfig())
        Traceback (most recent call last):
        ...
        heat_module.lm.architectures.UnsupportedArchitecture: ...
    """
    config = _config_of(model_or_config)
    model_type = str(getattr(config, "model_type", "") or type(config).__name__)
    name = type(model_or_config).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedArchitecture(model_type, f"Expected a decoder-only causal LM, got the encoder-decoder "
                                      f"model {name}", "Use a decoder-only causal LM.")
    if model_or_config is not config:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
        if name not in causal and not name.endswith("ForCausalLM") and not name.endswith("LMHeadModel"):
            raise UnsupportedArchitecture(
                model_type, f"Expected a decoder-only causal LM (a *ForCausalLM model), got {name}; encoder-only "
                "models have no next-token prediction", "Load the model with AutoModelForCausalLM.",
            )
    refusal = verdict(model_type)
    if refusal is not None:
        raise UnsupportedArchitecture(model_type, refusal.feature, refusal.advice)
    if getattr(config, "alibi", False) or getattr(config, "position_embedding_type", None) == "alibi":
        raise UnsupportedArchitecture(model_type, "the config enables ALiBi: a per-head additive attention bias, "
                                      "which HEAT's attention, prefix cache and rollout do not carry",
                                      "Use a checkpoint with rotary or learned positions.")
    can_set = getattr(model_or_config, "_can_set_attn_implementation", None)
    if can_set is not None and not can_set():
        raise UnsupportedArchitecture(model_type, f"Expected a model whose attention goes through transformers' "
                                      f"AttentionInterface, got {name}, which computes attention in its own code; "
                                      "HEAT cannot capture its queries, keys and values",
                                      "Use an architecture listed in docs/architectures.md.")

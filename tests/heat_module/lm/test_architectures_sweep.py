"""Every causal-LM entry transformers ships: HEAT exact on a tiny random model of it, or refused by name.

For each ``model_type`` of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` a tiny random model is built from its config
(:func:`heat_module.testing.tiny_config_for`: width 32, two layers keeping one layer of each type, small MoE / MLA /
SSM sizes, windows / chunks / ``floor_scale`` of 4 < n, weights widened so attention is not uniform), in fp64.
An architecture :data:`heat_module.lm.architectures.SUPPORTED` must give, for ``HEATConfig()`` (the Fisher S and
the exact I), ``HEATConfig.preset("mi")`` (M·I) — both with ``sink="keep"`` so M is compared as written — and
``HEATConfig.preset("exact")``:

- logits unchanged by install;
- I equal to a naive loop through the model's own forward with each token's embedding zeroed;
- the exact S equal to per-token double backward through the model's own (never installed, eager) forward;
- the Fisher S equal to S_i = (1/m) Σ_k ‖Σ_y P_y u_{y,i} (u_{y,i} · r_{k,i})‖₁ over the K most probable next tokens,
  each u_y = ∇_X log P_y from its own backward through that eager forward;
- M equal to a rollout of the model's own eager attention weights (recorded by a wrapper around the model's own
  ``eager_attention_forward``) weighted by ‖v W_O‖₁ computed through the model's own output projection; on
  hybrids (``gate="attention_only"``, after the default's refusal) over its attention layers.

Any other architecture must be refused by install with :class:`UnsupportedArchitecture` naming the model type,
before anything changes. Outcomes are printed as counts; ``python tests/heat_module/lm/test_architectures_sweep.py
--write docs/architectures.md`` regenerates the support table.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import sys
import types

import pytest
import torch

from heat_module import HEAT, HEATConfig
from heat_module.heat.curvature import curvature_naive, rademacher
from heat_module.heat.information import information_naive
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS
from heat_module.lm.architectures import (
    PROJECTION_NAMES,
    SUPPORTED,
    UnsupportedArchitecture,
    check_supported,
    verdict,
)
from heat_module.lm.capture import install, uninstall
from heat_module.lm.forward import embed
from heat_module.testing import TINY_VOCAB, tiny_config_for
from tests.heat_module.heat.dense_reference import fisher_reference

N, TARGET = 10, 5
#: supported architectures a known defect still makes wrong, with the defect (remove once it is fixed)
EXPECTED_FAILURES: dict[str, str] = {}


#: configurations of a supported model type that change its attention path, swept like an entry of their own:
#: correct or refused, never silently wrong (an expected failure names its defect)
VARIANTS = {
    "falcon+alibi": ("falcon", {"alibi": True}),
}


def _model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


@dataclasses.dataclass
class Outcome:
    """What the sweep found for one model type: ``category`` (decoder-only / not decoder-only / multimodal wrapper
    / draft model / cannot build), ``result`` (correct / refused / WRONG / CRASH) and the reason."""

    model_type: str
    category: str
    result: str
    reason: str = ""


_RECORDS: list[tuple] = []


def _reference_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The model's own eager attention, recording (module, values, weights); weights of a model whose sink only
    rescales the output (``s_aux``) are rescaled the same way, so they are the attention really applied."""
    fn = sys.modules[type(module).__module__].eager_attention_forward
    out, weights = fn(module, query, key, value, attention_mask, *args, **kwargs)
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        v = value.repeat_interleave(weights.shape[1] // value.shape[1], dim=1)
        plain = torch.matmul(weights.to(v.dtype), v)  # (B, H, n, d_v)
        got = out.transpose(1, 2)
        scale = (got * plain).sum(-1) / (plain * plain).sum(-1).clamp_min(1e-300)
        weights = weights * scale[..., None].to(weights.dtype)
    _RECORDS.append((module, value, weights))
    return out, weights


def _register_reference() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register("sweep_reference", _reference_attention)
    AttentionMaskInterface.register("sweep_reference", eager_mask)


def _rollout_reference(reference, x: torch.Tensor) -> torch.Tensor:
    """(n,) M with the sink kept (docs/design.md "M"), from the model's own eager attention and projections."""
    _register_reference()
    _RECORDS.clear()
    reference.set_attn_implementation("sweep_reference")
    try:
        with torch.no_grad():
            reference(inputs_embeds=x)
    finally:
        reference.set_attn_implementation("eager")
    n = x.shape[1]
    rho = torch.zeros(n, dtype=torch.float64)
    rho[-1] = 1.0
    m = torch.zeros(n, dtype=torch.float64)
    for module, value, weights in reversed(_RECORDS):
        proj = next(getattr(module, a) for a in PROJECTION_NAMES
                    if isinstance(getattr(module, a, None), torch.nn.Module))
        H, Hkv, dv = weights.shape[1], value.shape[1], value.shape[-1]
        phi = torch.einsum("j,hji->hi", rho, weights[0].double())
        with torch.no_grad():
            zero = proj(torch.zeros(1, n, H * dv, dtype=value.dtype))
            for h in range(H):  # ‖v_i^h W_O^h‖₁ through the module itself: head h's slot filled, the others 0
                slot = torch.zeros(1, n, H * dv, dtype=value.dtype)
                slot[0, :, h * dv:(h + 1) * dv] = value[0, h // (H // Hkv)]
                m += phi[h] * (proj(slot) - zero)[0].abs().sum(-1).double()
        rho = 0.5 * rho + 0.5 * phi.mean(0)
    return m / m.sum()


def _build(model_type: str, **changes):
    from transformers import AutoModelForCausalLM

    config = tiny_config_for(model_type, **changes)
    torch.manual_seed(0)
    kwargs = dict(dtype=torch.float32, experts_implementation="eager")
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", **kwargs)
    except (ValueError, ImportError):  # no sdpa for this architecture
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", **kwargs)
    with torch.no_grad():  # random init of some archs is tiny; widen it so attention is not uniform
        for name, p in model.named_parameters():
            if (p.dim() == 2 or p.dim() == 3 and "expert" in name) and not any(
                    e in name for e in ("emb", "wte", "wpe")):
                p.normal_(0.0, 1.4 / p.shape[-1] ** 0.5)
    model.eval().double()
    for p in model.parameters():
        p.requires_grad_(False)
    return config, model


def _category(model_type: str, class_name: str | None) -> str:
    refusal = verdict(model_type)
    if refusal is not None and refusal.kind == "not decoder-only":
        return "not decoder-only"
    if class_name is not None and "Assistant" in class_name:
        return "draft model"
    if class_name is not None and class_name.endswith("ForConditionalGeneration"):
        return "multimodal wrapper"
    return "decoder-only"


def _refused(model_type: str, category: str, error: UnsupportedArchitecture, config_type: str | None = None) -> Outcome:
    if error.model_type not in (model_type, config_type) or repr(error.model_type) not in str(error):
        return Outcome(model_type, category, "CRASH", f"the refusal names {error.model_type!r}: {error}")
    return Outcome(model_type, category, "refused", error.feature)


def _close(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> float | None:
    """None when close, else the largest absolute difference."""
    got, expected = got.double(), expected.double()
    return None if torch.allclose(got, expected, rtol=rtol, atol=atol) else float((got - expected).abs().max())


def sweep_one(model_type: str) -> Outcome:
    """Build, install and check one model type or :data:`VARIANTS` entry (see the module docstring)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = model_type
    model_type, changes = VARIANTS.get(name, (name, {}))
    class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    category = _category(model_type, class_name)
    try:
        config, model = _build(model_type, **changes)
        ids = torch.randint(4, TINY_VOCAB, (1, N), generator=torch.Generator().manual_seed(3))
        x = embed(model, ids)
        with torch.no_grad():
            before = model(inputs_embeds=x).logits
    except Exception as exc:  # noqa: BLE001 - an architecture transformers cannot build tiny must be refused
        try:  # the config alone (model_type) must already be refused
            check_supported(types.SimpleNamespace(model_type=model_type, to_dict=dict))
        except UnsupportedArchitecture as error:
            return _refused(model_type, "cannot build" if category == "decoder-only" else category, error)
        return Outcome(model_type, "cannot build", "CRASH", f"{type(exc).__name__}: {str(exc)[:120]} (not refused)")
    implementation = model.config._attn_implementation
    try:
        install(model)
    except UnsupportedArchitecture as error:
        assert model.config._attn_implementation == implementation, "the refusal came after install changed the model"
        return _refused(model_type, category, error, config.model_type)
    try:
        return dataclasses.replace(_check_installed(model_type, category, model, ids, x, before), model_type=name)
    finally:
        uninstall(model)


def _check_installed(model_type: str, category: str, model, ids, x, before) -> Outcome:
    reference = copy.deepcopy(model)  # never used by HEAT: its own eager forward
    uninstall(reference)
    reference.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            after = model(inputs_embeds=x).logits
        diff = _close(after, before, 1e-9, 1e-9)
        if diff is not None:
            return Outcome(model_type, category, "WRONG", f"install changed the logits by {diff:.1e}")
        expected_i = information_naive(reference, x)
        expected_m = _rollout_reference(reference, x)
        for name, cfg in (("default", HEATConfig(sink="keep")), ("M·I", HEATConfig.preset("mi", sink="keep")),
                          ("exact", HEATConfig.preset("exact"))):
            try:
                result = HEAT(model, config=cfg).attribute(ids, target=TARGET)
            except ValueError as error:  # hybrids: the full gate is refused, the attention-only one is asked for
                if "attention_only" not in str(error):
                    raise
                cfg = dataclasses.replace(cfg, gate="attention_only")
                result = HEAT(model, config=cfg).attribute(ids, target=TARGET)
            diff = _close(result.information, expected_i, 1e-4, 2e-6)
            if diff is not None:
                return Outcome(model_type, category, "WRONG", f"{name}: I off by {diff:.1e}")
            if cfg.computes_s:
                probes = rademacher(cfg.curvature.probes, N, x.shape[-1], seed=cfg.seed, dtype=x.dtype)
                if isinstance(cfg.curvature, ExactS):
                    expected_s = curvature_naive(reference, x, TARGET, probes)
                else:
                    assert isinstance(cfg.curvature, FisherS) and cfg.curvature.mass is None
                    expected_s = fisher_reference(reference, x, probes, cfg.curvature.topk)
                diff = _close(result.curvature, expected_s, 1e-4, 1e-6)
                if diff is not None:
                    return Outcome(model_type, category, "WRONG", f"{name}: S off by {diff:.1e}")
            diff = _close(result.transition, expected_m, 1e-5, 1e-7)
            if diff is not None:
                return Outcome(model_type, category, "WRONG", f"{name}: M off by {diff:.1e}")
        return Outcome(model_type, category, "correct")
    except Exception as exc:  # noqa: BLE001 - a crash is an outcome the sweep reports
        return Outcome(model_type, category, "CRASH", f"{type(exc).__name__}: {str(exc)[:160]}")


_OUTCOMES: list[Outcome] = []


def counts(outcomes: list[Outcome]) -> str:
    """``result: count`` (a wrong result of :data:`EXPECTED_FAILURES` counted as a known defect) and the same by
    category."""
    results = collections.Counter(
        "known defect (expected failure)" if o.result in ("WRONG", "CRASH") and o.model_type in EXPECTED_FAILURES
        else o.result for o in outcomes
    )
    kinds = collections.Counter(o.category for o in outcomes)
    return (", ".join(f"{k}: {v}" for k, v in sorted(results.items())) + "; by kind: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())))


def teardown_module() -> None:
    if _OUTCOMES:
        print(f"\narchitecture sweep ({len(_OUTCOMES)} in this process): {counts(_OUTCOMES)}")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("model_type", _model_types() + list(VARIANTS))
def test_exact_or_refused(model_type):
    outcome = sweep_one(model_type)
    _OUTCOMES.append(outcome)
    if model_type in EXPECTED_FAILURES and outcome.result in ("WRONG", "CRASH"):
        pytest.xfail(f"{EXPECTED_FAILURES[model_type]} ({outcome.reason})")
    assert outcome.result in ("correct", "refused"), f"{model_type}: {outcome.result}: {outcome.reason}"
    if model_type in VARIANTS:
        return  # a variant of a supported type may be refused by its config
    assert (outcome.result == "correct") == (model_type in SUPPORTED), (
        f"{model_type}: {outcome.result} but the architecture table says "
        f"{'supported' if model_type in SUPPORTED else 'refused'}"
    )


def test_sparse_topk_attention_would_change_the_logits():
    """Why the sparse top-k architectures are refused: with the table's refusal lifted, installing HEAT's attention
    changes DeepSeek-V3.2's logits (its index mask is built only for eager / sdpa)."""
    _, model = _build("deepseek_v32")
    x = embed(model, torch.randint(4, TINY_VOCAB, (1, N), generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        before = model(inputs_embeds=x).logits
    with pytest.raises(UnsupportedArchitecture, match="'deepseek_v32'.*sparse top-k"):
        install(model)
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    import heat_module.lm.architectures as table

    supported = table.SUPPORTED
    table.SUPPORTED = supported | {"deepseek_v32"}
    try:
        install(model)
        with torch.no_grad():
            after = model(inputs_embeds=x).logits
        uninstall(model)
    finally:
        table.SUPPORTED = supported
    assert float((after - before).abs().max()) > 1e-3


@pytest.mark.parametrize("model_type, feature", [
    ("mamba", "no softmax attention"), ("blt", "num_hidden_layers"), ("jetmoe", "output projection"),
    ("moshi", "output projection"), ("hrm_text", "decoder layers"), ("deepseek_v4", "input_ids"),
    ("bert", "encoder"), ("not_a_model_type", "not in HEAT's architecture table"),
])
def test_check_supported_names_model_type_and_feature(model_type, feature):
    config = type("Config", (), {"model_type": model_type, "to_dict": dict})()
    with pytest.raises(UnsupportedArchitecture, match=f"'{model_type}'.*{feature}"):
        check_supported(config)


def test_check_supported_accepts_a_supported_config_and_model():
    from heat_module.testing import tiny_config, tiny_model

    assert check_supported(tiny_config("llama")) is None
    assert check_supported(tiny_model("gpt2")) is None


def test_attnlrp_refuses_an_unsupported_architecture_before_changing_it():
    from heat_module.baselines.attnlrp import attnlrp_rules

    _, model = _build("deepseek_v32")
    with pytest.raises(UnsupportedArchitecture, match="'deepseek_v32'.*sparse top-k"):
        with attnlrp_rules(model):
            pass
    assert model.config._attn_implementation == "sdpa"


def test_support_table_is_current():
    """docs/architectures.md lists every entry with the table's verdict (regenerate it with this file's --write)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "architectures.md").read_text()
    for model_type in _model_types():
        status = "supported" if verdict(model_type) is None else "refused"
        rows = (f"| `{model_type}` | {status} |", f"| `{model_type}` | {status} (known defect) |")
        assert any(row in text for row in rows), f"{model_type} ({status}) is not in docs/architectures.md"


def write_table(outcomes: list[Outcome], path: str) -> None:
    """docs/architectures.md from the sweep's outcomes."""
    lines = [
        "# Architectures",
        "",
        "Generated by `python tests/heat_module/lm/test_architectures_sweep.py --write docs/architectures.md` from "
        "the architecture sweep: for every causal-LM entry of transformers' `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, a "
        "tiny random model (fp64, 2 layers, windows / chunks below the context) either gives, for `HEATConfig()` "
        "(Fisher S), `HEATConfig.preset(\"mi\")` and `HEATConfig.preset(\"exact\")`, logits unchanged by install and "
        "I, S (exact and Fisher), M equal to references computed "
        "through the model's own forward (*supported*), or is refused by `heat_module.lm.architectures."
        "check_supported` with the reason below (*refused*). The table lives in `heat_module/lm/architectures.py`.",
        "",
        f"Counts ({len(outcomes)}: the "
        "causal-LM entries plus configuration variants that change the attention path, such as `falcon+alibi`): "
        + counts(outcomes) + ".",
        "",
        "| model_type | status | kind | why / note |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        status = "refused" if o.result == "refused" else "supported"
        if o.result in ("WRONG", "CRASH") and o.model_type in EXPECTED_FAILURES:
            status += " (known defect)"
        note = o.reason if o.result != "correct" else ""
        if o.model_type in EXPECTED_FAILURES and o.result in ("WRONG", "CRASH"):
            note = "known defect: " + EXPECTED_FAILURES[o.model_type]
        lines.append(f"| `{o.model_type}` | {status} | {o.category} | {note.replace('|', '/')} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    only = [a for a in sys.argv[1:] if not a.startswith("--") and not a.endswith(".md")]
    outcomes = []
    for model_type in only or _model_types() + list(VARIANTS):
        outcome = sweep_one(model_type)
        outcomes.append(outcome)
        print(f"{model_type:28s} {outcome.category:20s} {outcome.result:8s} {outcome.reason[:110]}", flush=True)
    print(counts(outcomes))
    if "--write" in sys.argv:
        write_table(outcomes, sys.argv[sys.argv.index("--write") + 1])

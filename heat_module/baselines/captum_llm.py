"""captum's LLM attribution wrappers behind our contract (optional ``[baselines]`` extra: ``pip install captum``).

Kokhlikyan et al. 2020, "Captum: A unified and generic model interpretability library for PyTorch"
(https://arxiv.org/abs/2009.07896); the LLM wrappers are captum's ``LLMAttribution`` (perturbation methods:
FeatureAblation, ShapleyValueSampling, Lime) and ``LLMGradientAttribution`` (LayerIntegratedGradients on the input
embedding layer). Every method attributes log P(y | context) of the single target token (``attr_target="log_prob"``;
the sequence attribution of a one-token target). Perturbation methods replace a token by the ``baseline_token`` id
(captum's default 0); LayerIntegratedGradients integrates from the embedding of that token id.

captum's wrappers take one example at a time, so ``attribute_batch`` loops. Lime needs an interpretable linear
model: scikit-learn's Lasso when scikit-learn is installed (captum's default), else captum's pure-torch
``SGDLinearRegression``. ``seed`` seeds torch's global generator before each call (Shapley sampling and Lime draw
from it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method

ALGORITHMS = ("feature_ablation", "shapley_value_sampling", "lime", "layer_integrated_gradients")


def _require_captum():
    try:
        import captum.attr as ca  # lazy: optional dependency (the [baselines] extra)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Expected captum to be installed for the captum baselines, got none; install the extra: "
            "pip install 'heat-attribution[baselines]' (or pip install captum)"
        ) from err
    if not hasattr(ca, "LLMAttribution"):  # pragma: no cover
        raise ImportError("Expected captum >= 0.7 (with LLMAttribution), got an older captum")
    return ca


def _token_input(ca, ids: torch.Tensor, tokenizer, baseline_token: int):
    """A captum ``TextTokenInput`` over the given token ids (no re-tokenisation of a decoded string)."""

    class IdsTokenInput(ca.TextTokenInput):
        def __init__(self) -> None:  # noqa: D401 - mirrors TextTokenInput's attributes
            self.inp_tensor = ids[None].cpu()
            self.itp_tensor = self.inp_tensor
            self.itp_mask = None
            self.skip_tokens = None
            self.values = tokenizer.convert_ids_to_tokens(ids.tolist()) if tokenizer is not None else [
                str(int(i)) for i in ids]
            self.tokenizer = tokenizer
            self.n_itp_features = len(self.values)
            self.baselines = int(baseline_token)

    return IdsTokenInput()


class CaptumLLM(Attributor):
    """One of captum's LLM attribution methods on the next-token log-probability.

    Options:
        algorithm: one of :data:`ALGORITHMS`.
        baseline_token: token id used as the "absent" token / the IG baseline (default 0, captum's default).
        n_samples: Shapley permutations or Lime samples (default 25 / 50).
        steps: LayerIntegratedGradients steps (default 32).
        seed: seed of torch's generator before each call (default 0).
    """

    name = "captum"
    batched = False

    def __init__(self, model: nn.Module, tokenizer: object | None = None, algorithm: str = "feature_ablation",
                 baseline_token: int = 0, n_samples: int | None = None, steps: int = 32, seed: int = 0,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"Expected algorithm to be one of {list(ALGORITHMS)}, got {algorithm!r}")
        if tokenizer is None:
            raise ValueError("Expected a tokenizer for the captum LLM wrappers, got None")
        self.ca = _require_captum()
        self.algorithm = algorithm
        self.baseline_token = int(baseline_token)
        self.n_samples = n_samples if n_samples is not None else (50 if algorithm == "lime" else 25)
        self.steps = int(steps)
        self.seed = int(seed)
        self.name = f"captum_{algorithm}"
        ca = self.ca
        if algorithm == "layer_integrated_gradients":
            self.wrapper = ca.LLMGradientAttribution(
                ca.LayerIntegratedGradients(model, model.get_input_embeddings()), tokenizer)
        else:
            if algorithm == "feature_ablation":
                inner = ca.FeatureAblation(model)
            elif algorithm == "shapley_value_sampling":
                inner = ca.ShapleyValueSampling(model)
            else:
                inner = ca.Lime(model, interpretable_model=_lime_model())
            self.wrapper = ca.LLMAttribution(inner, tokenizer, attr_target="log_prob")

    def options(self) -> dict:
        return {"algorithm": self.algorithm, "baseline_token": self.baseline_token, "n_samples": self.n_samples,
                "steps": self.steps, "seed": self.seed}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        ids = input_ids[0]
        inp = _token_input(self.ca, ids, self.tokenizer, self.baseline_token)
        target = targets[:1].cpu()
        torch.manual_seed(self.seed)
        if self.algorithm == "layer_integrated_gradients":
            out = self.wrapper.attribute(inp, target=target, n_steps=self.steps,
                                         baselines=torch.full_like(inp.inp_tensor, self.baseline_token))
        else:
            kwargs: dict = {"use_cached_outputs": False, "forward_in_tokens": False}
            if self.algorithm == "shapley_value_sampling":
                kwargs["n_samples"] = self.n_samples
            elif self.algorithm == "lime":
                kwargs["n_samples"] = self.n_samples
            out = self.wrapper.attribute(inp, target=target, **kwargs)
        scores = out.seq_attr.detach().float().reshape(1, -1).to(input_ids.device)
        return scores, None


def _lime_model():
    from captum._utils.models.linear_model import SGDLinearRegression

    try:
        import sklearn  # noqa: F401
    except ImportError:
        return SGDLinearRegression()
    from captum._utils.models.linear_model import SkLearnLasso

    return SkLearnLasso(alpha=0.01)


def _factory(algorithm: str):
    class _Method(CaptumLLM):
        __doc__ = f"captum ``{algorithm}`` through ``CaptumLLM`` (see :class:`CaptumLLM`)."
        name = f"captum_{algorithm}"

        def __init__(self, model: nn.Module, tokenizer: object | None = None, **options: Any) -> None:
            options.setdefault("algorithm", algorithm)
            super().__init__(model, tokenizer, **options)

    _Method.__name__ = _Method.__qualname__ = "Captum" + "".join(p.title() for p in algorithm.split("_"))
    return _Method


CaptumFeatureAblation = register_method("captum_feature_ablation", title="captum FeatureAblation",
                                        needs=("captum",))(_factory("feature_ablation"))
CaptumShapleyValueSampling = register_method("captum_shapley_value_sampling", title="captum ShapleyValueSampling",
                                             needs=("captum",))(_factory("shapley_value_sampling"))
CaptumLime = register_method("captum_lime", title="captum Lime", needs=("captum",))(_factory("lime"))
CaptumLayerIntegratedGradients = register_method("captum_layer_integrated_gradients",
                                                 title="captum LayerIntegratedGradients",
                                                 needs=("captum",))(_factory("layer_integrated_gradients"))

import dataclasses

import pytest

from heat_module.config import FAST_FISHER_FE, FLAT_FIELDS, PRESETS, HEATConfig
from heat_module.hashing import stable_hash
from heat_module.heat.i_exact import ExactI
from heat_module.heat.i_fisher import FisherI
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS
from heat_module.heat.s_lowrank import LowRankS


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(beta=-0.1), "beta"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(alpha=-1), "alpha"),
        (dict(beta=0.5, curvature=dict(name="exact", probes=0)), "probes"),
        (dict(beta=0.5, curvature="newton"), "S estimator"),
        (dict(information=dict(name="exact", mask="blank")), "mask"),
        (dict(information=dict(name="fisher", mask="token")), "mask_token_id"),
        (dict(ablation="nope"), "ablation"),
        (dict(sink="last"), "sink"),
        (dict(window=0), "window"),
        (dict(window=8, stride=9), "stride"),
        (dict(stride=2), "window"),
        (dict(beta=0.5, curvature=dict(name="fisher", mass=1.5)), "mass"),
        (dict(beta=0.5, curvature=dict(name="fisher", mass="half")), "mass"),
        (dict(information=dict(name="fisher", mass=True)), "mass"),
        (dict(beta=0.5, curvature=dict(name="exact", hvp_memory_mb=0)), "hvp_memory_mb"),
        (dict(beta=0.5, curvature=dict(name="exact", hvp_memory_mb=float("inf"))), "hvp_memory_mb"),
        (dict(information="approx"), "I estimator"),
        (dict(gate="attention"), "gate"),
        (dict(normalize="l2"), "normalize"),
        (dict(beta=0.5, curvature=dict(name="lowrank", hvp_mode="fast")), "hvp_mode"),
        (dict(progress="yes"), "progress"),
        (dict(rollout_layers=[]), "rollout_layers"),
        (dict(rollout_layers=[1, 1]), "rollout_layers"),
        (dict(rollout_layers=[True]), "rollout_layers"),
        (dict(beta=0.0, gamma=0.0), "at least one of beta, gamma, alpha"),
        (dict(beta=0.0, gamma=0.0, ablation="no_gate"), "at least one of beta, gamma, alpha"),
        (dict(beta=0.0, gamma=0.0, ablation="uniform_gate"), "at least one of beta, gamma, alpha"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_invalid_config_names_field(changes, message):
    with pytest.raises(ValueError, match=message) as err:
        HEATConfig(**changes)
    assert "Expected" in str(err.value)


@pytest.mark.parametrize("gone", ["probes", "fisher_topk", "mask", "info_batch_size", "first_order", "extra"])
def test_settings_of_s_and_i_are_not_fields_of_the_config(gone):
    with pytest.raises(TypeError, match=gone):
        HEATConfig(**{gone: 1})


def test_defaults_and_hash():
    cfg = HEATConfig()  # the choice study's pick: eq. 5 with the Fisher S, the exact I and normalize="sum"
    assert (cfg.beta, cfg.gamma, cfg.alpha, cfg.curvature, cfg.information) == (0.5, 0.5, 0.0, FisherS(), ExactI())
    assert (cfg.normalize, cfg.sink, cfg.ablation) == ("sum", "auto", "full")
    assert cfg == HEATConfig.preset("fisher", normalize="sum")
    mi = HEATConfig.preset("mi")  # the former default: M·I
    assert (mi.beta, mi.gamma, mi.curvature, mi.information, mi.normalize) == (0.0, 1.0, None, ExactI(), "none")
    assert cfg.hash() == HEATConfig().hash()
    assert cfg.hash() != cfg.replace(beta=0.25).hash()
    assert cfg.hash() == cfg.replace(progress=True).hash()  # only what is printed
    exact = HEATConfig.preset("exact")
    assert exact.hash() != exact.replace(curvature=ExactS(probes=2)).hash()  # S's settings are hashed
    assert cfg.hash() != cfg.replace(information=ExactI(mask="mean")).hash()
    assert HEATConfig(window=10).effective_stride == 5


def test_max_memory_is_hashed_only_when_set():
    """A config without a memory budget hashes as if the field did not exist; a budget may change chunk sizes (the
    last bits), so it is hashed when set, and it survives the dict round trip."""
    cfg = HEATConfig()
    fields = cfg.to_dict()
    fields.pop("progress")
    fields.pop("max_memory")
    assert cfg.hash() == stable_hash(fields)
    budget = cfg.replace(max_memory="6GB")
    assert budget.hash() != cfg.hash()
    assert HEATConfig.from_dict(budget.to_dict()) == budget
    with pytest.raises(ValueError, match="Expected max_memory like '6GB'"):
        HEATConfig(max_memory="lots")


@pytest.mark.parametrize("s", [ExactS(probes=3), FisherS(topk=4), LowRankS(rank=2), "fisher", {"name": "lowrank"}],
                         ids=str)
def test_an_s_estimator_where_s_is_not_computed_is_an_error(s):
    """At beta = 0 (M·I) S is not computed: its estimator would be a silent no-op, so it is refused."""
    with pytest.raises(ValueError, match=r"Expected curvature=None where S is not computed \(beta=0"):
        HEATConfig(beta=0, curvature=s)
    with pytest.raises(ValueError, match=r"Expected curvature=None where S is not computed \(beta=0"):
        HEATConfig.preset("mi", curvature=s)
    with pytest.raises(ValueError, match="Expected curvature=None"):
        HEATConfig(beta=0.5, ablation="transition", curvature=s)
    with pytest.raises(ValueError, match="Expected curvature=None"):
        HEATConfig.preset("exact").replace(beta=0.0, curvature=s)


@pytest.mark.parametrize("i", [ExactI(mask="mean"), FisherI(topk=4), "fisher", {"name": "exact", "batch_size": 2}],
                         ids=str)
def test_an_i_estimator_where_i_is_not_computed_is_an_error(i):
    """At gamma = 0 (or in the ablations without I) I is not computed: its estimator would be a silent no-op."""
    with pytest.raises(ValueError, match=r"Expected information=None where I is not computed \(gamma=0"):
        HEATConfig(gamma=0, information=i)
    with pytest.raises(ValueError, match="Expected information=None"):
        HEATConfig(ablation="transition", information=i)
    with pytest.raises(ValueError, match="Expected information=None"):
        HEATConfig(ablation="curvature", information=i)
    with pytest.raises(ValueError, match="Expected information=None"):
        HEATConfig.preset("fast").replace(gamma=0.0, information=i)


def test_i_is_computed_with_an_estimator_where_it_applies_and_dropped_where_turned_off():
    """I where it is computed and none is named: the exact I; none where it is not; turning I off (gamma=0) drops
    a preset's own I estimator instead of refusing the change."""
    assert HEATConfig(gamma=0).information is None and HEATConfig(ablation="transition").information is None
    assert HEATConfig(gamma=0, ablation="information").information == ExactI()
    assert HEATConfig.preset("fast", gamma=0).information is None
    assert HEATConfig.preset("fast", gamma=0).curvature == FisherS(max_forward_equivalents=FAST_FISHER_FE)
    assert HEATConfig.preset("fast").replace(gamma=0).information is None
    assert HEATConfig.preset("fast").replace(gamma=0).replace(gamma=0.5).information == ExactI()
    assert HEATConfig.preset("fast").replace(beta=0).information == FisherI(max_forward_equivalents=FAST_FISHER_FE)
    only_m = HEATConfig(ablation="transition")
    assert only_m.to_dict()["information"] is None and HEATConfig.from_dict(only_m.to_dict()) == only_m
    # a stored dict where I was not computed may hold the exact I's defaults: read as None
    assert HEATConfig.from_dict({**only_m.to_dict(), "information": ExactI().to_dict()}) == only_m
    with pytest.raises(ValueError, match="Expected information=None"):
        HEATConfig.from_dict({**only_m.to_dict(), "information": FisherI().to_dict()})


def test_s_is_computed_with_an_estimator_always():
    """S where it is computed and no estimator is named: the default's Fisher S, whatever β; none where it is not."""
    assert HEATConfig(beta=0.3).curvature == FisherS()  # a weight alone does not change the estimator
    assert HEATConfig(beta=0, ablation="curvature").curvature == FisherS()
    assert HEATConfig(curvature="exact").curvature == ExactS()
    assert HEATConfig(beta=0).curvature is None and HEATConfig(beta=0.0, gamma=1.0).curvature is None
    assert HEATConfig.preset("mi", beta=0.5).curvature == FisherS()
    assert HEATConfig(beta=0.5, curvature="fisher").curvature == FisherS()
    assert HEATConfig(beta=0.5, curvature={"name": "lowrank", "rank": 3}).curvature == LowRankS(rank=3)
    assert HEATConfig(information="fisher").information == FisherI()
    assert HEATConfig(ablation="transition").curvature is None


def test_replace_that_turns_s_off_drops_the_estimator():
    """``replace(beta=0)`` without a curvature is M·I (the S estimator goes with S); turning S on gets the default S."""
    assert HEATConfig().replace(beta=0.0, gamma=1.0, normalize="none") == HEATConfig.preset("mi")
    assert HEATConfig.preset("exact").replace(beta=0.0).curvature is None
    assert HEATConfig.preset("mi").replace(beta=0.5).curvature == FisherS()
    assert HEATConfig.preset("exact").replace(gamma=1.0).curvature == ExactS()  # S stays on: its estimator stays


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_its_dict(name):
    cfg = HEATConfig.preset(name)
    back = HEATConfig.from_dict(cfg.to_dict())
    assert back == cfg and back.hash() == cfg.hash()
    assert (cfg.beta > 0) == (name != "mi") == (cfg.curvature is not None)  # every preset but M·I has S


def test_presets():
    assert HEATConfig.preset("default") == HEATConfig()
    exact = HEATConfig.preset("exact")
    assert exact == HEATConfig(beta=0.5, gamma=0.5, curvature=ExactS(), information=ExactI(), normalize="none")
    assert exact.to_dict()["curvature"] == {"name": "exact", "probes": 1, "hvp_chunk_size": 8, "hvp_mode": "auto",
                                            "hvp_memory_mb": 2048.0, "layers": None}
    fast = HEATConfig.preset("fast")
    budget = {"max_forward_equivalents": FAST_FISHER_FE}  # K within the budget: 16 up to ~1024 tokens on SmolLM2
    assert (fast.curvature, fast.information, fast.beta, fast.gamma) == (FisherS(**budget), FisherI(**budget), 0.5, 0.5)
    assert FAST_FISHER_FE == 24.0
    paper = HEATConfig.preset("paper", seed=3)
    assert (paper.curvature, paper.information, paper.beta, paper.gamma) == (ExactS(probes=10), ExactI(), 0.5, 0.5)
    assert (paper.sink, paper.seed) == ("keep", 3)
    fisher = HEATConfig.preset("fisher")
    assert (fisher.curvature, fisher.information, fisher.beta, fisher.gamma) == (FisherS(), ExactI(), 0.5, 0.5)
    # S turned off: the preset's S goes too
    assert HEATConfig.preset("fisher", beta=0.0) == HEATConfig(beta=0, normalize="none")
    with pytest.raises(ValueError, match="Expected curvature=None"):
        HEATConfig.preset("fisher", beta=0.0, curvature=FisherS())  # but a given one is refused
    with pytest.raises(ValueError, match="Expected preset to be one of"):
        HEATConfig.preset("fastest")


def test_from_dict_refuses_the_flat_layout_naming_the_fields():
    flat = {"beta": 0.5, "gamma": 0.5, "curvature": "exact", "probes": 1, "fisher_topk": 16, "mask": "zero",
            "first_order": "gated", "extra": {}}
    with pytest.raises(ValueError, match=r"got the flat fields \['extra', 'first_order', 'fisher_topk', 'mask', "
                                         r"'probes', 'curvature'\]"):
        HEATConfig.from_dict(flat)
    with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
        HEATConfig.from_dict({"colour": 1})
    assert set(FLAT_FIELDS).isdisjoint(f.name for f in dataclasses.fields(HEATConfig))


@pytest.mark.parametrize("fields, s, i", [
    ({}, True, True),                                               # the default: eq. 5 with the Fisher S
    ({"beta": 0}, False, True),                                     # M·I: β = 0
    ({"beta": 0.5, "gamma": 0.5}, True, True),                      # eq. 5
    ({"beta": 0.5, "gamma": 0.0}, True, False),
    ({"ablation": "curvature"}, True, False),                       # S alone, whatever β is
    ({"ablation": "information", "gamma": 0.0}, False, True),       # I alone, whatever γ is
    ({"ablation": "transition", "beta": 0.5}, False, False),        # M alone
    ({"ablation": "no_gate", "beta": 0.5, "gamma": 0.0}, True, False),
    ({"ablation": "uniform_gate", "beta": 0}, False, True),
])
def test_computes_s_and_i_by_hand(fields, s, i):
    cfg = HEATConfig(**fields)
    assert (cfg.computes_s, cfg.computes_i) == (s, i)
    assert (cfg.curvature is not None) == s


@pytest.mark.parametrize("ablation", ["transition", "curvature", "information"])
def test_zero_weights_allowed_where_the_ablation_needs_none(ablation):
    cfg = HEATConfig(beta=0.0, gamma=0.0, ablation=ablation)
    assert cfg.ablation == ablation
    assert HEATConfig(beta=0.0, gamma=0.0, alpha=0.5).alpha == 0.5  # HEAT+FO with the first-order term alone

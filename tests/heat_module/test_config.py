import warnings

import pytest

from heat_module.config import PRESETS, S_ONLY_FIELDS, S_UNUSED_WARNING, HEATConfig, s_only_changes


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(beta=-0.1), "beta"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(alpha=-1), "alpha"),
        (dict(probes=0), "probes"),
        (dict(curvature="newton"), "curvature"),
        (dict(mask="blank"), "mask"),
        (dict(mask="token"), "mask_token_id"),
        (dict(ablation="nope"), "ablation"),
        (dict(sink="last"), "sink"),
        (dict(window=0), "window"),
        (dict(window=8, stride=9), "stride"),
        (dict(stride=2), "window"),
        (dict(fisher_mass=1.5), "fisher_mass"),
        (dict(fisher_mass="half"), "fisher_mass"),
        (dict(fisher_mass=True), "fisher_mass"),
        (dict(hvp_memory_mb=0), "hvp_memory_mb"),
        (dict(hvp_memory_mb=float("inf")), "hvp_memory_mb"),
        (dict(information="approx"), "information"),
        (dict(gate="attention"), "gate"),
        (dict(normalize="l2"), "normalize"),
        (dict(first_order="inside"), "first_order"),
        (dict(hvp_mode="fast"), "hvp_mode"),
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


def test_defaults_and_hash():
    cfg = HEATConfig()  # M·I since the choice study: eq. 5 with beta = 0, gamma = 1
    assert (cfg.beta, cfg.gamma, cfg.alpha, cfg.curvature, cfg.probes, cfg.mask) == (0.0, 1.0, 0.0, "exact", 1, "zero")
    assert cfg.hash() == HEATConfig().hash()
    assert cfg.hash() != cfg.replace(beta=0.25).hash()
    assert HEATConfig(window=10).effective_stride == 5


#: HEATConfig.preset("exact") (eq. 5 with exact S), field by field
OLD_DEFAULT = dict(beta=0.5, gamma=0.5, alpha=0.0, first_order="gated", curvature="exact", information="exact",
                   probes=1, hvp_chunk_size=8, hvp_mode="auto", hvp_memory_mb=2048.0, fisher_topk=16, fisher_mass=None,
                   rank=16, oversample=8, layers=None, rollout_layers=None, mask="zero", mask_token_id=None,
                   info_batch_size=8, ablation="full", sink="auto", gate="full", normalize="none", window=None,
                   stride=None, window_leakage=False, aggregation="mean", backend="auto", seed=0, check_finite=True,
                   progress=None, max_memory=None, extra={})


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_constructs_without_warning(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = HEATConfig.preset(name)
    assert isinstance(cfg, HEATConfig) and not s_only_changes(cfg)
    assert (cfg.beta > 0) == (name != "default")  # every preset but the default has eq. 5's S


def test_presets():
    assert HEATConfig.preset("default") == HEATConfig()
    assert HEATConfig.preset("exact").to_dict() == OLD_DEFAULT  # the old default, explicit
    assert HEATConfig.preset("exact").hash() == HEATConfig(beta=0.5, gamma=0.5).hash()
    fast = HEATConfig.preset("fast")
    assert (fast.curvature, fast.information, fast.beta, fast.gamma) == ("fisher", "fisher", 0.5, 0.5)
    paper = HEATConfig.preset("paper", seed=3)
    assert (paper.curvature, paper.information, paper.probes, paper.beta, paper.gamma) == ("exact", "exact", 10, 0.5,
                                                                                          0.5)
    assert (paper.sink, paper.seed) == ("keep", 3)
    fisher = HEATConfig.preset("fisher")
    assert (fisher.curvature, fisher.information, fisher.beta, fisher.gamma) == ("fisher", "exact", 0.5, 0.5)
    with pytest.raises(ValueError, match="Expected preset to be one of"):
        HEATConfig.preset("fastest")
    with pytest.raises(ValueError, match="Expected hvp_memory_mb"):
        HEATConfig(hvp_memory_mb=0)


@pytest.mark.parametrize("changes", [
    dict(curvature="fisher"), dict(probes=4), dict(curvature="lowrank", rank=4, oversample=2), dict(layers=2),
    dict(hvp_mode="reverse_over_reverse"), dict(hvp_memory_mb=None), dict(hvp_chunk_size=2), dict(fisher_topk=4),
    dict(fisher_mass=0.9), dict(ablation="no_gate", probes=2), dict(ablation="uniform_gate", curvature="fisher"),
    dict(information="fisher", curvature="fisher"), dict(information="fisher", probes=3),
], ids=str)
def test_s_only_settings_at_beta_zero_warn(changes):
    """At beta = 0 (the default) S is not computed: a setting of S alone would be a silent no-op."""
    with pytest.warns(UserWarning, match=S_UNUSED_WARNING) as record:
        HEATConfig(**changes)
    message = str(record[0].message)
    assert all(f"{k}=" in message for k in changes if k not in ("ablation", "information"))
    assert "beta > 0" in message and "preset('exact')" in message


@pytest.mark.parametrize("changes", [
    dict(), dict(ablation="curvature", curvature="fisher"), dict(ablation="information", probes=4),
    dict(ablation="transition", curvature="lowrank"), dict(beta=0.5, curvature="fisher", probes=3),
    dict(beta=1e-3, layers=2), dict(information="fisher"), dict(information="fisher", fisher_topk=4, hvp_chunk_size=2),
    dict(gamma=0.5, sink="keep", normalize="sum", seed=5, info_batch_size=2, alpha=0.5), dict(curvature="exact"),
], ids=str)
def test_no_warning_where_s_settings_act_or_are_defaults(changes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = HEATConfig(**changes)
    assert not s_only_changes(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HEATConfig.preset("fisher")
        HEATConfig.preset("exact", probes=4, hvp_chunk_size=2)


def test_s_only_changes_names_every_changed_s_field():
    with pytest.warns(UserWarning, match=S_UNUSED_WARNING):
        cfg = HEATConfig(curvature="lowrank", rank=4, fisher_topk=3, seed=2, sink="keep")
    assert s_only_changes(cfg) == {"curvature": "lowrank", "fisher_topk": 3, "rank": 4}  # not seed, not sink
    assert s_only_changes(cfg.replace(beta=0.5)) == {}
    assert set(S_ONLY_FIELDS) <= set(OLD_DEFAULT)


@pytest.mark.parametrize("fields, s, i", [
    ({}, False, True),                                              # M·I: β = 0
    ({"beta": 0.5, "gamma": 0.5}, True, True),                      # eq. 5
    ({"beta": 0.5, "gamma": 0.0}, True, False),
    ({"ablation": "curvature"}, True, False),                       # S alone, whatever β is
    ({"ablation": "information", "gamma": 0.0}, False, True),       # I alone, whatever γ is
    ({"ablation": "transition", "beta": 0.5}, False, False),        # M alone
    ({"ablation": "no_gate", "beta": 0.5, "gamma": 0.0}, True, False),
    ({"ablation": "uniform_gate"}, False, True),
])
def test_computes_s_and_i_by_hand(fields, s, i):
    cfg = HEATConfig(**fields)
    assert (cfg.computes_s, cfg.computes_i) == (s, i)


@pytest.mark.parametrize("ablation", ["transition", "curvature", "information"])
def test_zero_weights_allowed_where_the_ablation_needs_none(ablation):
    cfg = HEATConfig(beta=0.0, gamma=0.0, ablation=ablation)
    assert cfg.ablation == ablation
    assert HEATConfig(beta=0.0, gamma=0.0, alpha=0.5).alpha == 0.5  # HEAT+FO with the first-order term alone

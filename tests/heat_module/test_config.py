import pytest

from heat_module.config import HEATConfig


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
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_invalid_config_names_field(changes, message):
    with pytest.raises(ValueError, match=message) as err:
        HEATConfig(**changes)
    assert "Expected" in str(err.value)


def test_defaults_and_hash():
    cfg = HEATConfig()
    assert (cfg.beta, cfg.gamma, cfg.alpha, cfg.curvature, cfg.probes, cfg.mask) == (0.5, 0.5, 0.0, "exact", 1, "zero")
    assert cfg.hash() == HEATConfig().hash()
    assert cfg.hash() != cfg.replace(beta=0.25).hash()
    assert HEATConfig(window=10).effective_stride == 5


def test_presets():
    assert HEATConfig.preset("default") == HEATConfig()
    fast = HEATConfig.preset("fast")
    assert (fast.curvature, fast.information) == ("fisher", "fisher")
    paper = HEATConfig.preset("paper", seed=3)
    assert (paper.curvature, paper.information, paper.probes) == ("exact", "exact", 10)
    assert (paper.sink, paper.seed) == ("keep", 3)
    assert HEATConfig.preset("fisher").information == "exact"
    with pytest.raises(ValueError, match="Expected preset to be one of"):
        HEATConfig.preset("fastest")
    with pytest.raises(ValueError, match="Expected hvp_memory_mb"):
        HEATConfig(hvp_memory_mb=0)

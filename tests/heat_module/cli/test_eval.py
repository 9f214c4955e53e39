"""``heat eval``'s argument handling (the run itself is tested in tests/heat_module/evaluation)."""

from __future__ import annotations

import pytest

from heat_module.cli.eval import build_parser, config_from_args, main


def test_cli_errors_and_options():
    with pytest.raises(SystemExit):
        main(["--datasets", "nope"])
    cfg = config_from_args(build_parser().parse_args(["--limit", "3", "--methods", "occlusion", "--wikibio", "w.txt"]))
    assert cfg.limit == 3 and list(cfg.baselines) == ["occlusion"] and cfg.data_path("wikibio") == "w.txt"


def test_methods_and_metrics_come_from_the_registries():
    from heat_module.attribution.registry import available_methods
    from heat_module.metrics.registry import metric_entries

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "metrics")
    assert list(action.choices) == [n for n, e in metric_entries().items() if e.inputs == "model"]
    assert all(name in parser.format_help().replace("\n", " ").replace(" ", "") for name in available_methods())
    cfg = config_from_args(parser.parse_args(["--metrics", "abpc", "--methods", "ig"]))
    assert cfg.metrics == ["abpc"] and cfg.baselines == {"ig": ("integrated_gradients", {})}
    with pytest.raises(SystemExit):
        parser.parse_args(["--metrics", "dsa"])

"""``heat eval``'s argument handling (the run itself is tested in tests/heat_module/evaluation)."""

from __future__ import annotations

import pytest

from heat_module.cli.eval import build_parser, config_from_args, main


def test_cli_errors_and_options():
    with pytest.raises(SystemExit):
        main(["--datasets", "nope"])
    cfg = config_from_args(build_parser().parse_args(["--limit", "3", "--methods", "occlusion", "--wikibio", "w.txt"]))
    assert cfg.limit == 3 and list(cfg.baselines) == ["occlusion"] and cfg.data_path("wikibio") == "w.txt"

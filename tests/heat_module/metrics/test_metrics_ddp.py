"""Every registered metric's states reduce across DDP ranks: 2 gloo processes give the single-process values (run
as a subprocess)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heat_module.metrics.registry import available_metrics

SCRIPT = Path(__file__).with_name("ddp_metrics_script.py")


@pytest.mark.slow
def test_two_ranks_equal_one_process():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    single, ddp = result["single"], result["ddp"]
    assert set(single) == set(ddp) and len(single) >= 15
    for key, value in single.items():
        if math.isnan(value):  # e.g. a log ratio of two zero means; must be NaN on both sides
            assert math.isnan(ddp[key]), key
        else:
            assert ddp[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    names = {key.split(".")[0] for key in single}
    assert names == {*available_metrics(), "heta"}  # every registered metric, ABPC included
    assert single["soft_nc.soft_nc"] > 0 and single["aopc"] != 0 and single["abpc"] != 0 and single["sensitivity"] > 0

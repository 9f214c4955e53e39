"""The baselines' fixtures (a tiny model, its tokenizer, a left-padded batch), shared with the registry tests."""

from tests.heat_module.baselines.conftest import _one_thread, batch, model, tok  # noqa: F401

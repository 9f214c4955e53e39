"""Add HEAT to the predict loop of your own LightningModule (no subclassing of ``HEATModule``).

Run:  python examples/own_lightning_module.py [--model smollm2|tiny] [--out outputs/own_module]

Two ways, both shown below:

1. ``HEATPredictMixin``: mix it into your module; ``predict_step`` calls ``self.heat_predict_step(batch)``.
   The mixin looks for your LM at ``self.model`` (override ``heat_model()`` otherwise) and reads
   ``self.heat_config``.
2. The functional ``heat_module.attribute_batch(model, input_ids, attention_mask, target_ids, config, tokenizer)``
   inside any ``predict_step`` you already have.

Either way: ``Trainer(inference_mode=False)`` (HEAT needs autograd), and an ``AttributionWriter`` callback if you
want resumable JSON-lines output.
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning.pytorch as pl
import torch

import heat_module as hm
from heat_module.data import TextPromptsDataModule
from heat_module.lightning.module import HEATPredictMixin


class MyLM(HEATPredictMixin, pl.LightningModule):
    """A user's own module (it could also train, validate, ...); HEAT only joins its predict loop."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.heat_config = hm.HEATConfig.preset("exact")  # eq. 5 with exact S (m = 1); HEATConfig(): Fisher S

    def predict_step(self, batch: dict, batch_idx: int) -> list:
        return self.heat_predict_step(batch, batch_idx)  # one AttributionResult per example, extra["id"] set


class MyOtherLM(pl.LightningModule):
    """The functional form: call ``hm.attribute_batch`` yourself."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def predict_step(self, batch: dict, batch_idx: int) -> list:
        with torch.enable_grad():
            return hm.attribute_batch(self.model, batch["input_ids"], batch["attention_mask"], batch["target_ids"],
                                      hm.HEATConfig(), self.tokenizer)  # the default: Fisher S + exact I


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", choices=["smollm2", "tiny"])
    parser.add_argument("--out", default="outputs/own_module")
    args = parser.parse_args(argv)
    if args.model == "tiny":  # a random tiny model: for a quick smoke run
        from heat_module.testing import tiny_model, tiny_tokenizer

        model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    else:
        model, tokenizer = hm.load_model("smollm2")
    prompts = ["the capital of france is", "she ordered a pizza and cut it with a"]
    data = TextPromptsDataModule(prompts, tokenizer=tokenizer, batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False,
                         enable_checkpointing=False, callbacks=[hm.AttributionWriter(args.out)])
    batches = trainer.predict(MyLM(model, tokenizer), datamodule=data)
    results = [r for batch in batches for r in batch]
    for r in results:
        print(r.extra["id"], repr(r.target), r.topk(3))
    return results


if __name__ == "__main__":
    main()

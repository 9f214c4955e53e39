"""2-process CPU DDP (gloo) predict + test on a tiny model; run as a script (Lightning re-launches it per rank).

    PYTHONPATH=. python tests/scripts/ddp_predict.py --out /tmp/ddp_out [--n 7] [--devices 2]

Writes ``predictions-rank{r}.jsonl`` (AttributionWriter) and, from rank 0, ``test_metrics.json`` with the logged test
metrics (``test/num_examples`` must equal ``n``: no padded duplicates) of every registered metric a batch carries
(:data:`heat_module.lightning.module.BATCH_INPUTS`; Sensitivity with Gradient×Input of the noisy embeddings), and
``metric_names.json``, the names asked for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning.pytorch as pl

import heat_module as hm
from heat_module.data import TextPromptsDataModule
from heat_module.lightning.module import BATCH_INPUTS
from heat_module.metrics.registry import metric_entries
from heat_module.testing import grad_x_input_fn, tiny_model, tiny_tokenizer

WORDS = "the cat dog bird sat ran in on a park tree house red big old".split()


def prompts(n: int) -> list[str]:
    return [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 4)) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=7)
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    names = [name for name, entry in metric_entries().items() if entry.inputs in BATCH_INPUTS]
    options = {"soft_nc": {"num_masks": 2}, "soft_ns": {"num_masks": 2}, "soft_faithfulness": {"num_masks": 2},
               "sensitivity": {"attribute_fn": grad_x_input_fn(model), "num_samples": 2}}
    module = hm.HEATModule(model, tok, hm.HEATConfig(beta=0.0), metrics=names, metric_options=options)
    common = dict(accelerator="cpu", devices=args.devices, strategy="ddp", inference_mode=False, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = pl.Trainer(callbacks=[hm.AttributionWriter(args.out)], **common)
    trainer.predict(module, datamodule=TextPromptsDataModule(prompts(args.n), tokenizer=tok, batch_size=2),
                    return_predictions=False)
    tester = pl.Trainer(**common)
    logged = tester.test(module, datamodule=TextPromptsDataModule(prompts(args.n), tokenizer=tok, batch_size=2),
                         verbose=False)[0]
    if tester.global_rank == 0:
        Path(args.out, "test_metrics.json").write_text(json.dumps({k: float(v) for k, v in logged.items()}))
        Path(args.out, "metric_names.json").write_text(json.dumps(names))


if __name__ == "__main__":
    main()

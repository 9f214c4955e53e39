"""One `trainer.predict` into a shared output directory, started in step with another process (the lock test).

    PYTHONPATH=. python tests/scripts/locked_predict.py --out DIR --ready FILE --go FILE

Imports everything, creates ``--ready``, waits for ``--go`` to exist, then predicts 4 prompts on a tiny model with a
pause before each batch, so two processes started together overlap while the first holds the shard. Exits 0 when
it wrote its shard, 3 when the writer refused because another run holds it (the message is printed to stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning.pytorch as pl

import heat_module as hm
from heat_module.data import TextPromptsDataModule
from heat_module.lightning.output_lock import OutputDirBusyError
from heat_module.testing import tiny_model, tiny_tokenizer

PROMPTS = ["the cat sat on the", "a dog ran in the", "my red car", "the old tree"]


class Pause(pl.Callback):
    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        time.sleep(2.0)  # the shard stays held for at least 8 s, so a loaded machine still overlaps the two runs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--go", required=True)
    args = parser.parse_args()
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    module = hm.HEATModule(model, tok, hm.HEATConfig.preset("mi"), metrics=[])
    trainer = pl.Trainer(callbacks=[hm.AttributionWriter(args.out), Pause()], accelerator="cpu", devices=1,
                         inference_mode=False, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    Path(args.ready).touch()
    deadline = time.time() + 120
    while not Path(args.go).exists():
        if time.time() > deadline:
            print("never told to go", file=sys.stderr)
            return 2
        time.sleep(0.01)
    try:
        trainer.predict(module, datamodule=TextPromptsDataModule(PROMPTS, tokenizer=tok, batch_size=1),
                        return_predictions=False)
    except OutputDirBusyError as e:
        print(e, file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

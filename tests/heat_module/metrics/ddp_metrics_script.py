"""Every registered metric on one process vs on two gloo (CPU) processes; prints ``{"single": ..., "ddp": ...}`` JSON.

Run by ``test_metrics_ddp.py`` as a subprocess (``python ddp_metrics_script.py``). Seven left-padded examples on a
tiny Llama: the single process updates in batches of 4 and 3; under DDP rank r takes examples r, r+2, ... (4 and 3
examples, uneven) in batches of 2, and ``compute()`` syncs the states across ranks.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

from heat_module.lm.forward import make_forward_fn, next_token_logits  # noqa: E402
from heat_module.metrics import SoftFaithfulness  # noqa: E402
from heat_module.metrics.registry import metric_entries  # noqa: E402
from heat_module.testing import TINY_VOCAB, grad_x_input_fn, tiny_model  # noqa: E402

NUM, N = 7, 8


def make_data(model):
    g = torch.Generator().manual_seed(0)
    emb = model.get_input_embeddings()
    ids = torch.randint(4, TINY_VOCAB, (NUM, N), generator=g)
    lengths = torch.randint(4, N + 1, (NUM,), generator=g)
    mask = (torch.arange(N)[None] >= (N - lengths)[:, None]).long()
    ids[mask == 0] = 0
    with torch.no_grad():
        x = emb(ids)
        targets = next_token_logits(model, x, mask).argmax(-1)
    scores = torch.randn(NUM, N, generator=g)
    gold = (torch.rand(NUM, N, generator=g) > 0.6) & mask.bool()
    gold[:, -1] = True
    distractor = (torch.rand(NUM, N, generator=g) > 0.5) & mask.bool() & ~gold
    rephrased = scores + 0.5 * torch.randn(NUM, N, generator=g)
    return dict(x=x, mask=mask, targets=targets, scores=scores, gold=gold, distractor=distractor, rephrased=rephrased)


def run(indices: list[int], batch: int) -> dict[str, float]:
    model = tiny_model("llama", seed=0)
    forward_fn = make_forward_fn(model)
    data = make_data(model)
    attribute_fn = grad_x_input_fn(model)
    small = {"soft_nc": {"num_masks": 2, "seed": 3, "batch_size": 8}, "soft_ns": {"num_masks": 2, "seed": 3},
             "soft_faithfulness": {"num_masks": 2, "seed": 3}, "sensitivity": {"num_samples": 3, "delta": 0.05},
             "abpc": {"steps": 4}}
    entries = metric_entries()
    metrics = {name: e.build(forward_fn=forward_fn, attribute_fn=attribute_fn, **small.get(name, {}))
               for name, e in entries.items()}
    metrics["heta"] = SoftFaithfulness(forward_fn, definition="heta")  # the other definition, beside the registry's
    for start in range(0, len(indices), batch):
        i = torch.tensor(indices[start : start + batch])
        d = {k: v[i] for k, v in data.items()}
        args = {"model": (d["scores"], d["x"], d["mask"], d["targets"]),
                "gold": (d["scores"], d["gold"], d["mask"]),
                "gold_distractor": (d["scores"], d["gold"], d["distractor"], d["mask"]),
                "attribute_fn": (d["x"], d["mask"], d["targets"]),
                "pairs": (d["scores"], d["rephrased"], d["mask"].bool())}
        for name, metric in metrics.items():
            metric.update(*args[entries[name].inputs if name in entries else "model"])
    out = {}
    for name, metric in metrics.items():
        value = metric.compute()
        if isinstance(value, dict):
            out.update({f"{name}.{k}": float(v) for k, v in value.items()})
        else:
            out[name] = float(value)
    return out


def worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = run(list(range(rank, NUM, world)), batch=2)
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump(result, f)
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def main() -> None:
    torch.set_num_threads(1)
    single = run(list(range(NUM)), batch=4)
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "out.json")
        mp.spawn(worker, args=(2, init_file, out_file), nprocs=2, join=True)
        with open(out_file) as f:
            ddp = json.load(f)
    print(json.dumps({"single": single, "ddp": ddp}))


if __name__ == "__main__":
    main()

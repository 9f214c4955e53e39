"""The resumable results of an evaluation: one JSON line per (dataset, example, method).

A re-run skips the lines it finds with the same fingerprint (:meth:`EvalConfig.fingerprint`: model, seed, metric
settings, HEAT probes, context cap) and computes only what is missing; lines of another fingerprint are ignored.
Besides the method rows, an example has a ``__reference__`` line (the metrics' random baseline and the example's
facts), a ``__components__`` line (HEAT's M, S, I, so new HEAT rows are recombined without running HEAT) and
``__time__`` lines (the seconds each pass over it took).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from heat_module.data.readers import json_lines


class Cache:
    """JSON-lines results keyed by ``dataset/example/method`` (records of another fingerprint are ignored).

    Args:
        path: the JSON-lines file (created on the first :meth:`add`).
        fingerprint: the run's fingerprint; written into every record.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from heat_module.evaluation import Cache
        >>> path = Path(tempfile.mkdtemp()) / "cache.jsonl"
        >>> Cache(path, fingerprint="run-a").add({"key": Cache.key("wikibio", "0", "random"), "metrics": {"aopc": 0.1}})
        >>> Cache(path, "run-a").has("wikibio/0/random"), Cache(path, "run-b").has("wikibio/0/random")
        (True, False)
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path, self.fingerprint = Path(path), fingerprint
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for _, _, rec in json_lines(self.path):  # a line cut by an interrupted run reads as None: skipped
                if isinstance(rec, dict) and rec.get("fp") == fingerprint:
                    self.records[rec["key"]] = rec

    @staticmethod
    def key(dataset: str, example_id: str, method: str) -> str:
        return f"{dataset}/{example_id}/{method}"

    def has(self, key: str) -> bool:
        return key in self.records

    def add(self, rec: dict) -> None:
        """Store ``rec`` (which has a ``key``) and append it to the file at once (an interrupted run loses at most
        the line being written)."""
        rec = {**rec, "fp": self.fingerprint}
        self.records[rec["key"]] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


def rounded(values: torch.Tensor, digits: int = 6) -> list[float]:
    """(n,) values as a list of floats with ``digits`` significant digits (what the caches store).

    >>> rounded(torch.tensor([1 / 3, 2.0]))
    [0.333333, 2.0]
    """
    return [float(f"{v:.{digits}g}") for v in values.detach().cpu().tolist()]

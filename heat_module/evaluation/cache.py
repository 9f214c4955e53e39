"""The one cache of the evaluation: resumable JSON-lines records keyed by ``dataset/example/what``.

Every study writes here (:func:`heat_module.evaluation.pipeline.run_study`): a method row of an example, the shared
attribution of a HEAT family (so new HEAT rows are recombined without running HEAT again), an example's reference
facts, timings. A re-run skips the keys it finds and computes only what is missing.

Several processes may work on one study at once: each appends to its own file (``cache*.jsonl`` in one folder) and
reads the others' lines on :meth:`Cache.refresh`. With a fingerprint (what makes results comparable: model, seed,
metric settings), records of another fingerprint are ignored; the last line of a key wins; a line cut by an
interrupted run is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from heat_module.data.readers import json_lines


class Cache:
    """JSON-lines records keyed by ``key``, read from every ``cache*.jsonl`` file of ``path``'s folder.

    Args:
        path: the file this process appends to (``cache*.jsonl``; created on the first :meth:`add`).
        fingerprint: written into every record; records of another fingerprint are ignored. ``None``: every
            record is read and none is marked.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from heat_module.evaluation import Cache
        >>> path = Path(tempfile.mkdtemp()) / "cache.jsonl"
        >>> Cache(path, fingerprint="run-a").add({"key": Cache.key("wikibio", "0", "random"), "metrics": {"aopc": 0.1}})
        >>> Cache(path, "run-a").has("wikibio/0/random"), Cache(path, "run-b").has("wikibio/0/random")
        (True, False)
        >>> Cache(path.with_name("cache-2.jsonl"), "run-a").has("wikibio/0/random")  # a sibling file sees it
        True
    """

    def __init__(self, path: Path, fingerprint: str | None = None) -> None:
        self.path, self.fingerprint = Path(path), fingerprint
        if not (self.path.name.startswith("cache") and self.path.suffix == ".jsonl"):
            raise ValueError(f"Expected a cache file named cache*.jsonl, got {self.path.name!r}")
        self.records: dict[str, dict] = {}
        self.refresh()

    @staticmethod
    def key(dataset: str, example_id: str, what: str) -> str:
        return f"{dataset}/{example_id}/{what}"

    def refresh(self) -> None:
        """Re-read every ``cache*.jsonl`` of the folder (other processes' lines; this process's are in memory)."""
        if not self.path.parent.exists():
            return
        for file in sorted(self.path.parent.glob("cache*.jsonl")):
            for _, _, rec in json_lines(file):  # a line cut by an interrupted run reads as None: skipped
                if isinstance(rec, dict) and (self.fingerprint is None or rec.get("fp") == self.fingerprint):
                    self.records[rec["key"]] = rec

    def has(self, key: str) -> bool:
        return key in self.records

    def add(self, rec: dict) -> None:
        """Store ``rec`` (which has a ``key``) and append it to the file at once (an interrupted run loses at most
        the line being written)."""
        if self.fingerprint is not None:
            rec = {**rec, "fp": self.fingerprint}
        self.records[rec["key"]] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


def rounded(values: torch.Tensor, digits: int = 6) -> list[float]:
    """(n,) values as a list of floats with ``digits`` significant digits (what the cache stores).

    >>> rounded(torch.tensor([1 / 3, 2.0]))
    [0.333333, 2.0]
    """
    return [float(f"{v:.{digits}g}") for v in values.detach().float().cpu().tolist()]

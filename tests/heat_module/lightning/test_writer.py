"""AttributionWriter: JSON-lines round trip, crash + resume without duplicates, errors shard, bad output dirs."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import heat_module as hm
from heat_module.data import TextPromptsDataModule
from heat_module.lightning.module import HEATModule
from heat_module.lightning.output_lock import OutputDirBusyError, OutputLock
from heat_module.lightning.progress import HEATProgressBar
from heat_module.lightning.writer import AttributionWriter, config_hash, read_errors, read_predictions

PROMPTS = ["the cat sat on the", "she ordered a pizza and cut it with a", "my red car", "a dog ran in the",
           "the capital of france is"]
CHEAP = hm.HEATConfig.preset("mi")  # M·I: no S


@pytest.fixture(scope="module")
def tiny():
    from heat_module.testing import tiny_model, tiny_tokenizer

    return tiny_model("llama", seed=0), tiny_tokenizer()


def trainer(*callbacks, **kwargs) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    return pl.Trainer(callbacks=list(callbacks), **{**defaults, **kwargs})


class Crash(pl.Callback):
    """Simulates a crash right after the first batch was written."""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        raise RuntimeError("simulated crash after batch 0")


class CountingModule(HEATModule):
    """Records the ids that reach HEAT."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attributed: list[str] = []

    def predict_step(self, batch, batch_idx=0, dataloader_idx=0):
        out = super().predict_step(batch, batch_idx, dataloader_idx)
        self.attributed += [r.extra["id"] for r in out]
        return out


def test_lines_round_trip(tiny, tmp_path):
    model, tok = tiny
    data = TextPromptsDataModule(PROMPTS[:3], tokenizer=tok, batch_size=2)
    batches = trainer(AttributionWriter(tmp_path)).predict(HEATModule(model, tok, CHEAP), datamodule=data)
    results = [r for b in batches for r in b]
    rows = read_predictions(tmp_path)
    assert [row["id"] for row in rows] == ["0", "1", "2"]
    for row, res in zip(rows, results):
        assert row["config_hash"] == CHEAP.hash() and row["rank"] == 0
        for key in ("tokens", "target", "scores", "transition", "curvature", "information"):
            assert key in row
        back = hm.AttributionResult.from_dict(row)
        assert back.tokens == res.tokens and back.target_id == res.target_id and back.curvature is None
        torch.testing.assert_close(back.scores, res.scores.float(), rtol=0, atol=0)
        torch.testing.assert_close(back.information, res.information.float(), rtol=0, atol=0)
        assert back.extra["id"] == row["id"]


def test_crash_after_first_batch_then_resume_writes_every_id_once(tiny, tmp_path):
    model, tok = tiny

    def data():
        return TextPromptsDataModule(PROMPTS, tokenizer=tok, batch_size=2)

    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(AttributionWriter(tmp_path), Crash()).predict(HEATModule(model, tok, CHEAP), datamodule=data())
    assert [r["id"] for r in read_predictions(tmp_path)] == ["0", "1"]  # batch 0 is on disk
    module = CountingModule(model, tok, CHEAP)
    writer = AttributionWriter(tmp_path)
    trainer(writer, HEATProgressBar(), enable_progress_bar=True).predict(module, datamodule=data(),
                                                                          return_predictions=False)
    assert writer.done_ids == {"0", "1"}
    assert module.attributed == ["2", "3", "4"]  # the finished examples cost no attribution
    ids = [r["id"] for r in read_predictions(tmp_path)]
    assert sorted(ids) == ["0", "1", "2", "3", "4"]
    # a third run has nothing left to do
    module = CountingModule(model, tok, CHEAP)
    trainer(AttributionWriter(tmp_path)).predict(module, datamodule=data(), return_predictions=False)
    assert module.attributed == [] and len(read_predictions(tmp_path)) == 5


def test_torn_last_line_is_cut_on_resume(tiny, tmp_path):
    model, tok = tiny
    good = {"id": "0", "config_hash": CHEAP.hash()}
    (tmp_path / "predictions-rank0.jsonl").write_text(json.dumps(good) + "\n" + '{"id": "1", "scor')
    module = CountingModule(model, tok, CHEAP)
    writer = AttributionWriter(tmp_path)
    with pytest.warns(UserWarning, match="torn last line"):
        trainer(writer).predict(module, datamodule=TextPromptsDataModule(PROMPTS[:2], tokenizer=tok))
    assert writer.done_ids == {"0"} and module.attributed == ["1"]
    lines = (tmp_path / "predictions-rank0.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["0", "1"]


def test_another_config_is_not_skipped(tiny, tmp_path):
    model, tok = tiny
    data = TextPromptsDataModule(PROMPTS[:1], tokenizer=tok)
    trainer(AttributionWriter(tmp_path)).predict(HEATModule(model, tok, CHEAP), datamodule=data)
    module = CountingModule(model, tok, hm.HEATConfig(beta=0.0, gamma=0.5))  # CHEAP has gamma = 1
    with pytest.warns(UserWarning, match="1 predictions were written with another config"):
        trainer(AttributionWriter(tmp_path)).predict(module, datamodule=data)
    assert module.attributed == ["0"]


def test_config_hash_of_a_stored_config_equals_the_config_hash():
    cfg = hm.HEATConfig.preset("fast")
    assert config_hash(cfg.to_dict()) == cfg.hash() != config_hash(hm.HEATConfig().to_dict())
    assert config_hash({"steps": 4}) == config_hash({"steps": 4})  # a baseline's options: hashed as they are


def test_resume_over_rows_with_a_flat_heat_config_is_refused(tiny, tmp_path):
    """Rows whose stored HEAT config has S's and I's settings as config fields (``probes``, ``mask``, ...) carry a
    hash computed another way: resuming over them stops with an error naming them, instead of re-attributing
    silently beside them."""
    model, tok = tiny
    row = {"id": "0", "config_hash": "0123abcd", "method": "heat",
           "config": {"beta": 0.5, "gamma": 0.5, "curvature": "exact", "probes": 1, "mask": "zero"}}
    (tmp_path / "predictions-rank0.jsonl").write_text(json.dumps(row) + "\n")
    data = TextPromptsDataModule(PROMPTS[:1], tokenizer=tok)
    with pytest.raises(ValueError, match=r"predictions-rank0.jsonl: Expected .* got a row \(id '0'\) with the flat "
                                         r"fields \['mask', 'probes'\]"):
        trainer(AttributionWriter(tmp_path)).predict(HEATModule(model, tok, CHEAP), datamodule=data)


def test_bad_example_goes_to_the_errors_shard(tiny, tmp_path):
    model, tok = tiny
    prompts = [PROMPTS[0], " ".join(["the"] * 130), PROMPTS[2]]  # the tiny model has 128 positions
    data = TextPromptsDataModule(prompts, tokenizer=tok, batch_size=2)
    with pytest.raises(ValueError, match="at most 128 tokens"):
        trainer(AttributionWriter(tmp_path / "strict")).predict(HEATModule(model, tok, CHEAP), datamodule=data)
    module = HEATModule(model, tok, CHEAP, skip_bad_examples=True)
    trainer(AttributionWriter(tmp_path / "skip")).predict(module, datamodule=data, return_predictions=False)
    assert [r["id"] for r in read_predictions(tmp_path / "skip")] == ["0", "2"]
    errors = read_errors(tmp_path / "skip")
    assert [e["id"] for e in errors] == ["1"] and errors[0]["error_type"] == "ValueError"
    assert "at most 128 tokens" in errors[0]["error"]


def test_unwritable_output_dir_fails_at_setup(tiny, tmp_path):
    model, tok = tiny
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    data = TextPromptsDataModule(PROMPTS[:1], tokenizer=tok)
    module = CountingModule(model, tok, CHEAP)
    with pytest.raises(PermissionError, match="Expected a writable output directory .*a_file/out"):
        trainer(AttributionWriter(blocker / "out")).predict(module, datamodule=data)
    with pytest.raises(NotADirectoryError, match="got a file"):
        trainer(AttributionWriter(blocker)).predict(module, datamodule=data)
    assert module.attributed == []


def test_write_interval_must_be_batch(tmp_path):
    with pytest.raises(ValueError, match="Expected write_interval='batch'"):
        AttributionWriter(tmp_path, write_interval="epoch")


# ---------------------------------------------------------------------- runs that collide, corrupt lines, full disks
ROOT = Path(__file__).resolve().parents[3]


def test_two_runs_started_together_one_is_refused_nothing_is_duplicated(tmp_path):
    """Two processes predict into one directory at the same moment: exactly one writes, the other stops with an
    error naming the directory and the run holding it; every id is on disk once."""
    out, go = tmp_path / "out", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = []
    for k in range(2):
        cmd = [sys.executable, str(ROOT / "tests" / "scripts" / "locked_predict.py"), "--out", str(out),
               "--ready", str(tmp_path / f"ready{k}"), "--go", str(go)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 240
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    outcomes = []
    for p in procs:
        _, err = p.communicate(timeout=240)
        outcomes.append((p.returncode, err))
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 3], outcomes
    refused = next(err for code, err in outcomes if code == 3)
    assert str(out) in refused and "pid" in refused and "locked_predict.py" in refused
    ids = [r["id"] for r in read_predictions(out)]
    assert sorted(ids) == ["0", "1", "2", "3"]


def test_lock_is_released_and_a_second_writer_in_the_same_process_is_refused(tmp_path):
    first, second = OutputLock(tmp_path, 0), OutputLock(tmp_path, 0)
    first.acquire()
    with pytest.raises(OutputDirBusyError, match=f"rank 0's shard of '{tmp_path}'.*pid {os.getpid()}"):
        second.acquire()
    OutputLock(tmp_path, 1).acquire()  # another rank has its own shard
    first.release()
    second.acquire()
    second.release()


def good_row(i: int) -> dict:
    return {"id": str(i), "config_hash": CHEAP.hash()}


def test_corrupt_line_in_the_middle_is_reported_moved_aside_and_attributed_once(tiny, tmp_path):
    model, tok = tiny
    shard = tmp_path / "predictions-rank0.jsonl"
    lines = [json.dumps(good_row(0)), '{"id": "1", "scores": [0.1, 0.', "\x00" * 40, json.dumps(good_row(2))]
    shard.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"2 corrupt line\(s\) \(line 2, 3\)"):
        read_predictions(tmp_path)
    module = CountingModule(model, tok, CHEAP)
    writer = AttributionWriter(tmp_path)
    with pytest.warns(UserWarning, match=r"2 corrupt line\(s\) \(line 2, 3\) moved to .*corrupt-rank0.jsonl"):
        trainer(writer).predict(module, datamodule=TextPromptsDataModule(PROMPTS[:4], tokenizer=tok))
    assert writer.done_ids == {"0", "2"} and module.attributed == ["1", "3"]
    assert sorted(r["id"] for r in read_predictions(tmp_path)) == ["0", "1", "2", "3"]
    aside = [json.loads(line) for line in (tmp_path / "corrupt-rank0.jsonl").read_text().splitlines()]
    assert [a["line"] for a in aside] == [2, 3] and aside[0]["raw"].startswith('{"id": "1"')


def test_corrupt_line_of_another_rank_is_reported_and_not_counted_as_done(tiny, tmp_path):
    model, tok = tiny
    other = tmp_path / "predictions-rank1.jsonl"
    other.write_text(json.dumps(good_row(0)) + "\n" + "not json at all\n")
    module = CountingModule(model, tok, CHEAP)
    with pytest.warns(UserWarning, match=r"corrupt lines in predictions-rank1.jsonl \(line 2\)"):
        trainer(AttributionWriter(tmp_path)).predict(module, datamodule=TextPromptsDataModule(PROMPTS[:2],
                                                                                              tokenizer=tok))
    assert module.attributed == ["1"]
    assert other.read_text().endswith("not json at all\n")  # another rank's shard is left to that rank


def test_full_disk_stops_the_run_and_a_resume_writes_every_id_once(tiny, tmp_path, monkeypatch):
    """ENOSPC in the middle of the second batch's write: the partial batch is undone, the run stops with an error
    that says the disk is full, and a later run writes each id exactly once."""
    model, tok = tiny
    import heat_module.lightning.writer as writer_module

    real_write, calls = os.write, {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch: write a few bytes, then the disk is full
            real_write(fd, bytes(data[:7]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def data():
        return TextPromptsDataModule(PROMPTS, tokenizer=tok, batch_size=2)

    monkeypatch.setattr(writer_module.os, "write", failing_write)
    with pytest.raises(OSError, match="the disk is full.*that batch was undone, 2 prediction"):
        trainer(AttributionWriter(tmp_path)).predict(HEATModule(model, tok, CHEAP), datamodule=data())
    monkeypatch.setattr(writer_module.os, "write", real_write)
    text = (tmp_path / "predictions-rank0.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(x)["id"] for x in text.splitlines()] == ["0", "1"]
    module = CountingModule(model, tok, CHEAP)
    trainer(AttributionWriter(tmp_path)).predict(module, datamodule=data(), return_predictions=False)
    assert module.attributed == ["2", "3", "4"]
    assert sorted(r["id"] for r in read_predictions(tmp_path)) == ["0", "1", "2", "3", "4"]

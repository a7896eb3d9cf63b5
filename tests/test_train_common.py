"""CSVLog: rows with new keys widen the header (earlier rows get empty cells), atomically; resumed logs append."""

from __future__ import annotations

import csv

import pytest

from openmrt.train import common
from openmrt.train.common import CSVLog


def _read(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def test_new_keys_widen_the_header_and_missing_keys_leave_empty_cells(tmp_path):
    path = tmp_path / "run" / "log.csv"
    log = CSVLog(path)
    log.write({"step": 1, "loss": 0.5})
    log.write({"step": 2, "loss": 0.25})
    log.write({"step": 3, "loss": 0.125, "eval_loss": 1.5})  # an evaluation row: new column
    log.write({"step": 4, "loss": 0.0625})
    log.write({"lr": 0.001, "step": 5, "eval_loss": 1.25})  # another new column; no loss
    fields, rows = _read(path)
    assert fields == ["step", "loss", "eval_loss", "lr"]
    assert rows == [
        {"step": "1", "loss": "0.5", "eval_loss": "", "lr": ""},
        {"step": "2", "loss": "0.25", "eval_loss": "", "lr": ""},
        {"step": "3", "loss": "0.125", "eval_loss": "1.5", "lr": ""},
        {"step": "4", "loss": "0.0625", "eval_loss": "", "lr": ""},
        {"step": "5", "loss": "", "eval_loss": "1.25", "lr": "0.001"},
    ]
    assert sorted(p.name for p in path.parent.iterdir()) == ["log.csv"]  # no temporary file left behind

    resumed = CSVLog(path)  # a resumed run appends under the existing header, and may still widen it
    resumed.write({"step": 6, "loss": 0.03125})
    resumed.write({"step": 7, "loss": 0.015625, "grad_norm": 2.0})
    fields, rows = _read(path)
    assert fields == ["step", "loss", "eval_loss", "lr", "grad_norm"]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6", "7"]
    assert rows[5] == {"step": "6", "loss": "0.03125", "eval_loss": "", "lr": "", "grad_norm": ""}
    assert rows[6]["grad_norm"] == "2.0" and rows[2]["eval_loss"] == "1.5" and rows[4]["lr"] == "0.001"
    with open(path, newline="") as f:
        assert {len(r) for r in csv.reader(f)} == {5}  # every line has every column


def test_a_failed_widening_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    log = CSVLog(path)
    log.write({"step": 1, "loss": 0.5})
    before = path.read_bytes()

    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        log.write({"step": 2, "loss": 0.25, "eval_loss": 1.0})
    assert path.read_bytes() == before
    monkeypatch.undo()
    CSVLog(path).write({"step": 2, "loss": 0.25, "eval_loss": 1.0})  # the next run widens it (over the stale tmp)
    assert _read(path) == (["step", "loss", "eval_loss"], [{"step": "1", "loss": "0.5", "eval_loss": ""},
                                                            {"step": "2", "loss": "0.25", "eval_loss": "1.0"}])


def test_disabled_logs_write_nothing(tmp_path):
    CSVLog(tmp_path / "log.csv", enabled=False).write({"step": 1})
    assert not (tmp_path / "log.csv").exists()

"""The one safetensors writer and reader (openmrt/weights.py): atomic, durable, one config key, kinds checked."""

from __future__ import annotations

import os

import pytest
import torch

from openmrt import weights
from openmrt.errors import CheckpointError
from openmrt.weights import atomic_write, config_json, load_tensors, save_tensors


def test_round_trip_keeps_tensors_kind_and_config(tmp_path):
    t = {"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.tensor([1, 2], dtype=torch.int16)}  # non-contiguous a
    path = save_tensors(tmp_path / "sub" / "x.safetensors", t, kind="openmrt-test", config='{"n": 1}',
                        metadata={"step": "7"})
    back, meta = load_tensors(path, "test file", kind="openmrt-test")
    assert back.keys() == t.keys() and all(torch.equal(back[k], t[k]) for k in t)
    assert meta == {"kind": "openmrt-test", "config": '{"n": 1}', "step": "7"}
    assert config_json(meta, path, "test") == '{"n": 1}'
    assert oct(path.stat().st_mode & 0o777) == "0o644"  # readable once installed as package data
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    with pytest.raises(CheckpointError, match="'openmrt-test' file, not a LM"):
        load_tensors(path, "LM", kind="openmrt-lm")
    with pytest.raises(CheckpointError, match="no 'config' metadata"):
        config_json({"kind": "x"}, path, "LM")
    assert config_json({"codec_config": "{}"}, path, "codec") == "{}"  # the key older codec files used


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = save_tensors(tmp_path / "x.safetensors", {"a": torch.zeros(3)}, kind="k")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="killed"), atomic_write(path) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("killed")
    assert path.read_bytes() == before and not tmp.exists()
    with pytest.raises(CheckpointError, match="not found"):
        load_tensors(tmp_path / "none.safetensors", "LM weights")


def test_the_file_and_its_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(weights.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                         real_fsync(fd)))
    monkeypatch.setattr(weights.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    path = tmp_path / "x.safetensors"
    save_tensors(path, {"a": torch.zeros(3)}, kind="k")
    assert events == [("fsync", str(path) + ".tmp"), ("replace", str(path)), ("fsync", str(tmp_path))]

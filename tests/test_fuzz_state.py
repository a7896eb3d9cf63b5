"""Fuzzed saved-state files through Session.load_state: from another model, truncated, a damaged header, tensors of
the wrong shape or dtype, missing keys, not safetensors. Each loads or is refused with a CheckpointError naming the
file; either way the session plays on (a state that loads but makes a step fail plays silence, reported once)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from openmrt import tokens as tk
from openmrt.config import lm_config
from openmrt.engine.bundle import random_bundle
from openmrt.engine.session import FrameInput, Session
from openmrt.errors import CheckpointError

FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
COND = tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("state")
    session = Session(random_bundle("tiny", "demo", seed=0), lambda: FrameInput(COND))
    for _ in range(5):
        session.produce()
    session.save_state(d / "good.safetensors")
    return session, d


def test_state_from_another_model_is_refused(saved):
    session, d = saved
    with safe_open(str(d / "good.safetensors"), framework="pt") as f:
        t, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    meta["lm"], meta["bundle"] = lm_config("demo").to_json(), "random:demo+demo"
    save_file(t, str(d / "other.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="another model .random:demo"):
        session.load_state(d / "other.safetensors")


@FUZZ
@given(st.data())
def test_fuzzed_state_files(saved, data):
    session, d = saved
    src, dst = d / "good.safetensors", d / "fuzz.safetensors"
    raw = src.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "header", "body", "garbage", "dtype", "shape", "drop", "meta"]))
    if how == "truncate":
        dst.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    elif how in ("header", "body"):
        n = 8 + int.from_bytes(raw[:8], "little")
        lo, hi = (0, n - 1) if how == "header" else (n, len(raw) - 1)
        b = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(lo, hi))] = data.draw(st.integers(0, 255))
        dst.write_bytes(bytes(b))
    elif how == "garbage":
        dst.write_bytes(data.draw(st.binary(max_size=64)))
    else:
        with safe_open(str(src), framework="pt") as f:
            t, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
        k = data.draw(st.sampled_from(sorted(t)))
        if how == "dtype":
            t[k] = t[k].to(data.draw(st.sampled_from([torch.float16, torch.int32, torch.uint8, torch.bool])))
        elif how == "shape":
            t[k] = torch.cat([t[k].reshape(-1), t[k].reshape(-1)[:1]])
        elif how == "drop":
            del t[k]
        else:
            meta[data.draw(st.sampled_from(sorted(meta)))] = data.draw(st.sampled_from(["", "{", json.dumps({})]))
        save_file({n: v.contiguous() for n, v in t.items()}, str(dst), metadata=meta)
    try:
        session.load_state(dst)
    except CheckpointError as e:
        assert "fuzz.safetensors" in str(e)
    faults = len(session.faults)
    session.produce()  # the session plays on whatever was loaded: sound, or silence and one report
    assert len(session.faults) <= faults + 1
    assert np.isfinite(session.ring.read(1920)).all()
    session.load_state(src)  # back to a good state for the next case

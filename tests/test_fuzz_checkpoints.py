"""Fuzzed weight files through the LM, codec and style loaders: not safetensors at all, truncated, a damaged
header, a tensor of the wrong dtype or shape, a missing or extra tensor, broken metadata. Each either loads (a
dtype a copy converts, like float16, is fine) or is refused with a CheckpointError naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from openmrt.codec.checkpoint import DEMO_PATH as CODEC_DEMO
from openmrt.codec.checkpoint import load_codec
from openmrt.config import lm_config
from openmrt.errors import CheckpointError
from openmrt.lm.checkpoint import init_weights, load_any_lm, save_lm
from openmrt.lm.model import Depthformer
from openmrt.style import load_style
from openmrt.style.model import DEMO_PATH as STYLE_DEMO

FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64, torch.uint8, torch.bool]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    save_lm(init_weights(Depthformer(lm_config("tiny"))), d / "lm.safetensors")
    shutil.copy(CODEC_DEMO, d / "codec.safetensors")
    shutil.copy(STYLE_DEMO, d / "style.safetensors")
    return d


LOADERS = {
    "lm": lambda p: load_any_lm(p),
    "codec": lambda p: load_codec(p),
    "style": lambda p: load_style(str(p)),
}


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _mutate(src: Path, dst: Path, data) -> None:
    """One damage, drawn: bytes-level or tensor-level."""
    how = data.draw(st.sampled_from(["truncate", "header", "garbage", "dtype", "shape", "drop", "extra", "meta"]))
    raw = src.read_bytes()
    if how == "truncate":
        dst.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
        return
    if how == "header":  # 8-byte length, then the JSON header: offsets, shapes, dtypes, metadata
        n = 8 + int.from_bytes(raw[:8], "little")
        b = bytearray(raw[:n])
        for _ in range(data.draw(st.integers(1, 4))):
            b[data.draw(st.integers(0, n - 1))] = data.draw(st.integers(0, 255))
        dst.write_bytes(bytes(b) + raw[n:])
        return
    if how == "garbage":
        dst.write_bytes(data.draw(st.sampled_from([b"", b"{}", b"not a checkpoint", json.dumps({"a": 1}).encode(),
                                                   b"PK\x03\x04" + bytes(100), (2**40).to_bytes(8, "little")])))
        return
    t, meta = _tensors(src)
    keys = sorted(t)
    k = data.draw(st.sampled_from(keys))
    if how == "dtype":
        t[k] = t[k].to(data.draw(st.sampled_from(DTYPES)))
    elif how == "shape":
        x = t[k]
        choice = data.draw(st.integers(0, 2))
        if choice == 0 and x.ndim and x.shape[0] > 1:
            t[k] = x[:-1].clone()  # one row short
        elif choice == 1:
            t[k] = x.reshape(-1).clone()  # flattened
        else:
            t[k] = torch.cat([x.reshape(-1), x.reshape(-1)[:1]]).clone()  # one too many
    elif how == "drop":
        del t[k]
    elif how == "extra":
        t["surprise.weight"] = torch.zeros(3, 3)
    else:  # metadata
        key = data.draw(st.sampled_from(sorted(meta) or ["kind"]))
        meta[key] = data.draw(st.sampled_from(["", "{", "null", "[]", "{\"name\": 3}", json.dumps({"x": 1}),
                                               "openmrt-codec", "openmrt-lm", "openmrt-style"]))
    save_file({n: v.contiguous() for n, v in t.items()}, str(dst), metadata=meta)


def _check(which: str, files: Path, data) -> None:
    src = files / f"{which}.safetensors"
    dst = files / f"fuzz-{which}.safetensors"
    _mutate(src, dst, data)
    try:
        LOADERS[which](dst)
    except CheckpointError as e:
        assert str(dst) in str(e) or dst.name in str(e), str(e)


@settings(FUZZ, max_examples=300)
@given(st.data())
def test_fuzzed_lm_files(files, data):
    _check("lm", files, data)


@settings(FUZZ, max_examples=25)
@given(st.data())
def test_fuzzed_codec_files(files, data):
    _check("codec", files, data)


@settings(FUZZ, max_examples=25)
@given(st.data())
def test_fuzzed_style_files(files, data):
    _check("style", files, data)

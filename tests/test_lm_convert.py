"""Official checkpoint layout: every key of the released sizes maps to a parameter of the right
shape, and bad checkpoints fail with errors naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from openmrt.config import lm_config
from openmrt.errors import CheckpointError
from openmrt.lm.convert import convert_state_dict, key_map, load_official, official_shape, read_checkpoint
from openmrt.lm.model import Depthformer


def read_key_list(path) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in open(path, encoding="utf-8"):
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")[:2]
        keys[key] = tuple(json.loads(shape))
    return keys


@pytest.mark.parametrize(("size", "n_tensors", "n_params"), [("mrt2_small", 325, 229_732_614),
                                                             ("mrt2_base", 569, 2_406_701_830)])
def test_official_keys_map_to_parameters(golden_dir, size, n_tensors, n_params):
    cfg = lm_config(size)
    with torch.device("meta"):
        model = Depthformer(cfg)
    assert sum(p.numel() for p in model.parameters()) == n_params
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = read_key_list(golden_dir / f"param_keys_{size}.txt")
    kmap = key_map(cfg)
    assert len(official) == n_tensors
    assert set(kmap) == set(official)
    assert sorted(name for name, _ in kmap.values()) == sorted(shapes)  # a bijection onto our parameters
    for key, (name, layout) in kmap.items():
        t = cfg.temporal if name.startswith("temporal.") else cfg.depth
        assert official_shape(shapes[name], layout, t.num_heads, t.head_dim) == official[key], key


@pytest.fixture(scope="module")
def tiny_flat(golden_dir):
    return load_file(str(golden_dir / "tiny_params.safetensors"))


def test_missing_key_is_named(tiny_flat):
    flat = dict(tiny_flat)
    gone = "params/depthformer/decoder/depth_body/final_ln/bias"
    del flat[gone]
    with pytest.raises(CheckpointError, match="missing keys: " + gone):
        load_official(Depthformer(lm_config("tiny")), flat)


def test_unexpected_key_is_named(tiny_flat):
    flat = dict(tiny_flat)
    flat["params/depthformer/decoder/extra/kernel"] = np.zeros(3, np.float32)
    flat["params/soundstream/quantizer/embedding"] = np.zeros(3, np.float32)  # the codec's: not ours, ignored
    with pytest.raises(CheckpointError, match="unexpected keys: params/depthformer/decoder/extra/kernel"):
        load_official(Depthformer(lm_config("tiny")), flat)


def test_misshaped_key_is_named(tiny_flat):
    flat = dict(tiny_flat)
    key = "params/depthformer/decoder/temporal_body/transformer/x_layers_1/cross_attention/attention/"
    key += "key_projection/kernel"
    flat[key] = np.zeros((64, 4, 31), np.float32)
    with pytest.raises(CheckpointError, match=key + r": shape \[64, 4, 31\], expected \[64, 4, 32\]"):
        load_official(Depthformer(lm_config("tiny")), flat)


def test_wrong_size_checkpoint(tiny_flat):
    with torch.device("meta"):
        small = Depthformer(lm_config("mrt2_small"))
    with pytest.raises(CheckpointError, match="mrt2_small"):
        convert_state_dict(tiny_flat, small.cfg, {k: v.shape for k, v in small.state_dict().items()})


def test_truncated_file(tmp_path, tiny_flat):
    path = tmp_path / "ckpt.safetensors"
    save_file(dict(tiny_flat), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="ckpt.safetensors"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.safetensors")

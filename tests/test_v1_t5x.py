"""Reading an official-layout T5X checkpoint (msgpack + one zarr array per parameter, via tensorstore): a seeded
tiny v1 checkpoint written here in that layout loads into V1LM with every weight and the logits unchanged."""

from __future__ import annotations

import shutil

import msgpack
import numpy as np
import pytest
import torch
from needs import need

from openmrt.errors import CheckpointError
from openmrt.lm_v1.config import v1_config
from openmrt.lm_v1.convert import key_map, load_official
from openmrt.lm_v1.model import V1LM
from openmrt.lm_v1.t5x import load_t5x, read_t5x

try:
    import tensorstore as ts
except ImportError:
    ts = None

INLINE = "encoder/encoder_norm/scale"  # kept inside the msgpack (an unpartitioned leaf)


def seeded_params() -> dict[str, np.ndarray]:
    """Official-layout tiny weights ([in, out] kernels) from a fixed seed."""
    cfg = v1_config("tiny")
    shapes = {k: v.shape for k, v in V1LM(cfg).state_dict().items()}
    rng = np.random.default_rng(7)
    return {key: rng.standard_normal(tuple(shapes[name])[::-1] if t else tuple(shapes[name])).astype(np.float32)
            for key, (name, t) in key_map(cfg).items()}


def nest(flat: dict) -> dict:
    out: dict = {}
    for key, v in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def ndarray_ext(a: np.ndarray) -> msgpack.ExtType:
    """flax's msgpack encoding of an inline ndarray: ext 1 of packed (shape, dtype name, C bytes)."""
    return msgpack.ExtType(1, msgpack.packb((list(a.shape), a.dtype.name, a.tobytes("C")), use_bin_type=True))


def write_t5x(root, params: dict[str, np.ndarray]) -> None:
    """The T5X layout: each partitioned leaf a gzip zarr array named by its state path with '.'s, referenced
    from the msgpack by its (relative) TensorStore spec; the optimizer's own state alongside, to be ignored."""
    root.mkdir(parents=True)
    leaves = {}
    for key, a in params.items():
        if key == INLINE:
            leaves[key] = ndarray_ext(a)
            continue
        name = "target." + key.replace("/", ".")
        spec = {"driver": "zarr", "dtype": "float32", "kvstore": {"driver": "file", "path": name},
                "metadata": {"compressor": {"id": "gzip"}, "shape": list(a.shape), "chunks": list(a.shape)}}
        abs_spec = dict(spec, kvstore={"driver": "file", "path": str(root / name)})
        ts.open(abs_spec, create=True).result().write(a).result()
        leaves[key] = spec
    state = {"version": 3, "optimizer": {
        "target": nest(leaves),
        "state": {"step": msgpack.ExtType(3, msgpack.packb(([], "int32", np.int32(1860000).tobytes()))),
                  "param_states": {"decoder": {"logits_dense": {"kernel": {"v_row": None}}}}},
    }}
    (root / "checkpoint").write_bytes(msgpack.packb(state, use_bin_type=True))


@pytest.fixture
def checkpoint(tmp_path):
    need(ts is not None, "the tensorstore package (pip install 'openmrt[v1]')")
    params = seeded_params()
    write_t5x(tmp_path / "llm_base" / "checkpoint_1860000", params)
    return tmp_path / "llm_base", params


def test_v1_reads_a_t5x_checkpoint(checkpoint):
    path, params = checkpoint
    flat = read_t5x(path)  # the unpacked archive's folder: finds checkpoint_1860000 inside
    assert set(flat) == set(params)
    assert all(np.array_equal(flat[k], params[k]) for k in params)
    model, direct = V1LM(v1_config("tiny")).eval(), V1LM(v1_config("tiny")).eval()
    load_official(model, flat)
    load_official(direct, params)
    ids = torch.randint(2, 16386, (2, 1006), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(2, 16386, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids, targets), direct(ids, targets))
    loaded = load_t5x(path)  # picks the preset by shape: tiny here
    assert loaded.cfg.name == "tiny" and all(torch.equal(a, b) for a, b in
                                            zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))


def test_v1_t5x_errors_name_the_problem(checkpoint, tmp_path):
    path, _ = checkpoint
    with pytest.raises(CheckpointError, match="no T5X 'checkpoint' file"):
        read_t5x(tmp_path / "nowhere")
    shutil.rmtree(path / "checkpoint_1860000" / "target.decoder.logits_dense.kernel")
    with pytest.raises(CheckpointError, match="decoder/logits_dense/kernel"):
        read_t5x(path)
    (path / "checkpoint_1860000" / "checkpoint").write_bytes(b"\x93not msgpack at all")
    with pytest.raises(CheckpointError, match="not a T5X checkpoint"):
        read_t5x(path)

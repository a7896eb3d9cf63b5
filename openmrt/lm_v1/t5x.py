"""Read an official v1 checkpoint in the T5X layout (the released ``llm_{base,large}_*.tar``, extracted).

A T5X checkpoint directory holds ``checkpoint``, a msgpack file (flax serialization) of
``{"version", "optimizer": {"target": params, "state": optimizer state}}``, and one zarr array per
parameter whose leaf in the msgpack is the TensorStore spec pointing at it (path relative to the
directory, named by the '/'-joined state path with '.' separators). Small unpartitioned arrays may be
stored in the msgpack itself (flax's ndarray extension type). Only ``target`` (the parameters) is read;
the zarr arrays are opened with ``tensorstore`` (an optional dependency: ``pip install openmrt[v1]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from openmrt.errors import CheckpointError
from openmrt.lm_v1.config import PRESETS
from openmrt.lm_v1.convert import load_official
from openmrt.lm_v1.model import V1LM

_NDARRAY, _NPSCALAR = 1, 3  # flax's msgpack extension codes


def _ext_hook(code: int, data: bytes):
    import msgpack

    if code in (_NDARRAY, _NPSCALAR):
        shape, dtype, buf = msgpack.unpackb(data, raw=False)
        if dtype == "bfloat16":
            import ml_dtypes

            dt = np.dtype(ml_dtypes.bfloat16)
        else:
            dt = np.dtype(dtype)
        arr = np.frombuffer(buf, dtype=dt).reshape(shape)
        return arr if code == _NDARRAY else arr[()]
    return msgpack.ExtType(code, data)


def checkpoint_dir(path: str | Path) -> Path:
    """The directory holding the ``checkpoint`` file: ``path`` itself, its parent (``path`` is the file), or
    the only ``checkpoint_*`` folder inside it (as the released archives unpack)."""
    p = Path(path)
    if p.is_file() and p.name == "checkpoint":
        return p.parent
    if (p / "checkpoint").is_file():
        return p
    found = sorted(c.parent for c in p.glob("*/checkpoint") if c.is_file()) if p.is_dir() else []
    if len(found) == 1:
        return found[0]
    what = "several checkpoints: " + ", ".join(map(str, found)) if found else "no T5X 'checkpoint' file"
    raise CheckpointError(f"{p}: {what} (pass the checkpoint_<step> folder of an extracted T5X checkpoint)")


def _is_spec(x) -> bool:
    return isinstance(x, dict) and "driver" in x and "kvstore" in x


def _open_spec(spec: dict, root: Path, key: str) -> np.ndarray:
    try:
        import tensorstore as ts
    except ImportError:
        raise CheckpointError("reading T5X checkpoints needs the tensorstore package "
                              "(pip install 'openmrt[v1]' or pip install tensorstore)") from None
    spec = dict(spec)
    rel = spec["kvstore"].get("path") or spec.pop("path", None)  # tensorstore >= 0.1.14 keeps it in the kvstore
    if rel is None:
        raise CheckpointError(f"{root}: the spec of {key} names no array path")
    # Relative to the checkpoint folder; one written to GCS (dummy bucket) is read from the extracted copy.
    spec["kvstore"] = {"driver": "file", "path": str(root / rel)}
    try:
        arr = ts.open(spec, open=True, read=True).result().read().result()
    except Exception as e:  # tensorstore raises ValueError/RuntimeError subclasses of its own
        raise CheckpointError(f"{root}: cannot read {key} from {rel} (missing or corrupt zarr array?): {e}") from e
    return np.asarray(arr)


def read_t5x(path: str | Path) -> dict[str, np.ndarray]:
    """The parameters of a T5X checkpoint: {'/'-joined flax path under ``target`` (e.g.
    ``decoder/logits_dense/kernel``): float32 array}, ready for ``convert.load_official``."""
    try:
        import msgpack
    except ImportError:
        raise CheckpointError("reading T5X checkpoints needs the msgpack package (pip install 'openmrt[v1]')") from None

    root = checkpoint_dir(path)
    try:
        state = msgpack.unpackb((root / "checkpoint").read_bytes(), ext_hook=_ext_hook, raw=False,
                                strict_map_key=False)
        target = state["optimizer"]["target"]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise CheckpointError(f"{root / 'checkpoint'}: not a T5X checkpoint msgpack with optimizer/target ({e})") from e
    out: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        if _is_spec(node):
            out[prefix] = _open_spec(node, root, prefix)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(node, np.ndarray):
            out[prefix] = node
        elif node is not None:
            raise CheckpointError(f"{root}: unexpected {type(node).__name__} at target/{prefix}")

    walk(target, "")
    return {k: v.astype(np.float32) for k, v in out.items()}


def load_t5x(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> V1LM:
    """A V1LM built from a T5X checkpoint; the preset (base or large) is the one whose shapes it has."""
    flat = read_t5x(path)
    width = flat.get("token_embedder/embedding", np.zeros((0, 0))).shape[-1]
    layers = len({k.split("/")[1] for k in flat if k.startswith("encoder/layers_")})
    cfg = next((c for c in PRESETS.values() if (c.dim, c.encoder_layers) == (width, layers)), None)
    if cfg is None:
        raise CheckpointError(f"{path}: width {width} with {layers} encoder layers matches no v1 preset "
                              f"({', '.join(f'{c.name}: {c.dim}/{c.encoder_layers}' for c in PRESETS.values())})")
    model = V1LM(cfg)
    load_official(model, flat)
    return model.to(device=device, dtype=dtype).eval()

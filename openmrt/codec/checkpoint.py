"""Our own codec checkpoints: safetensors with the CodecConfig as JSON in the metadata.

A file alone is enough to rebuild the model (DESIGN.md conventions). Official weights go
through convert.py instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

from openmrt.codec.model import SpectroStream
from openmrt.config import CodecConfig
from openmrt.errors import CheckpointError

CONFIG_KEY = "codec_config"


def save_codec(model: SpectroStream, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and config; ``extra`` adds string metadata (e.g. training step)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={CONFIG_KEY: model.config.to_json(), **(extra or {})})
    return path


def load_codec(path: str | Path, device: torch.device | str = "cpu") -> SpectroStream:
    """Rebuild a codec saved by :func:`save_codec`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"codec checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {path} as safetensors: {e}") from e
    if CONFIG_KEY not in meta:
        raise CheckpointError(
            f"{path} has no {CONFIG_KEY!r} metadata: not an openmrt codec checkpoint "
            "(official SpectroStream weights load with openmrt.codec.load_official)"
        )
    model = SpectroStream(CodecConfig.from_json(meta[CONFIG_KEY])).to(device)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit its own config: missing {missing}, unexpected {unexpected}")
    return model.eval()

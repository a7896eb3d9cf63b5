"""Rebuild the seeded golden weights (shared/golden/seeded/README.md §2) and check them.

Importable by any test: ``from seeded import rebuild, check_fingerprints``. The result is a flat
``{official key: float32 array in the official layout}`` dict, fed through the same converters
as a real checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

CODEC_SEED = 20251
LM_SEED = 20252

# Kernels whose initialisation gain is not 1 (README §2.2).
_GAINS = {
    "params/depthformer/decoder/depth_body/to_logits/kernel": 10.0,
    "params/soundstream/decoder/output_layer/base_conv_last/conv/kernel": 3.0,
}


def offset_and_scale(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """The README's rule, keyed on the last path component."""
    parts = key.split("/")
    leaf = parts[-1]
    fixed = {
        "bias": (0.0, 0.02),
        "scale": (1.0, 0.1),
        "per_dim_scale": (0.0, 0.2),
        "sink_key_embeddings": (0.0, 0.2),
        "sink_value_embeddings": (0.0, 1.0),
    }
    if leaf in fixed:
        return fixed[leaf]
    if leaf == "embedding":
        if parts[-2] == "quantizer":
            return 0.0, 0.3
        return (0.0, 1.0) if "regular_embedder" in parts else (0.0, 0.02)
    if leaf == "kernel":
        fan_in = shape[0] if len(shape) == 3 else math.prod(shape[:-1])
        return 0.0, _GAINS.get(key, 1.0) / math.sqrt(fan_in)
    raise KeyError(f"no seeded-init rule for {key}")


def read_key_list(path: str | Path) -> list[tuple[int, str, tuple[int, ...], float, float]]:
    """Rows (index, key, shape, offset, scale) of a key list; '#' lines are headers."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        idx, key, shape, offset, scale = line.split("\t")
        rows.append((int(idx), key, tuple(json.loads(shape)), float(offset), float(scale)))
    return rows


def rebuild(key_list_path: str | Path, seed: int, only: str | tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Official key -> float32 array, bit for bit as the golden generator made them.

    Args:
        key_list_path: ``codec_param_keys.txt`` or ``lm_param_keys.txt``.
        seed: 20251 (codec) or 20252 (LM).
        only: rebuild only keys starting with this prefix (or prefixes); indices stay global.
    """
    rows = read_key_list(key_list_path)
    keys = [r[1] for r in rows]
    if keys != sorted(keys) or [r[0] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{key_list_path}: keys not in code-point order or indices not 0..n-1")
    out = {}
    for i, key, shape, offset, scale in rows:
        if only is not None and not key.startswith(only):
            continue
        off, sc = offset_and_scale(key, shape)
        if off != offset or float(np.float32(sc)) != scale:
            raise ValueError(f"{key}: rule gives ({off}, {sc}), key list says ({offset}, {scale})")
        z = np.random.default_rng([seed, i]).standard_normal(shape)  # float64, C order
        w = z.astype(np.float32) * np.float32(sc)  # round to float32 first, then one float32 multiply
        if off:
            w = w + np.float32(off)
        out[key] = w
    return out


def check_fingerprints(weights: dict[str, np.ndarray], fingerprint_path: str | Path, group: str) -> list[str]:
    """Keys whose first values or sums differ from weights_fingerprint.json (README §2.4); [] if all agree."""
    fp = json.loads(Path(fingerprint_path).read_text())[group]
    bad = []
    for key, w in weights.items():
        s, ss, first = fp[key]
        w64 = w.astype(np.float64)
        if w.reshape(-1)[:3].tolist() != first:
            bad.append(f"{key}: first values")
        # NumPy's pairwise sums reproduce them exactly; 1e-12 (README) allows another summation order.
        elif abs(w64.sum() - s) > 1e-12 * math.sqrt(w.size * ss) or abs((w64 * w64).sum() - ss) > 1e-12 * ss:
            bad.append(f"{key}: sums")
    return bad

"""Our own weight files: the one safetensors writer and the one reader.

Every file openmrt writes (LM, codec, style model, stream and session states) goes through
:func:`save_tensors`: string metadata with ``kind`` (what the file is) and ``config`` (the model's
JSON config, so a file alone rebuilds its model). The write is atomic and durable: a temporary
file in the same folder, flushed and fsynced, renamed over the target, then the folder fsynced,
so a crash leaves the old file or the new one, never half of one. :func:`atomic_write` gives the
same guarantee to other formats (npz shards, training checkpoints).

Files written before this module kept the config under other keys (the codec's ``codec_config``);
:func:`config_json` still reads them, so shipped files load without being rewritten.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from openmrt.errors import CheckpointError, OpenMRTError

CONFIG_KEY = "config"
LEGACY_CONFIG_KEYS = ("codec_config",)  # codec files written before the one key

__all__ = ["CONFIG_KEY", "atomic_write", "config_json", "load_tensors", "read_metadata", "save_tensors"]


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write (with any library); on a clean exit
    fsync it, rename it to ``path`` and fsync the folder (so the rename itself survives a power cut).
    On an error the temporary file goes and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], *, kind: str, config: str | None = None,
                 metadata: dict[str, str] | None = None, mode: int | None = 0o644) -> Path:
    """Write ``tensors`` (moved to the CPU, contiguous) with metadata ``kind``, ``config`` (a JSON string)
    and any further string ``metadata``; atomic (see :func:`atomic_write`). ``mode``: the file's permission
    bits (readable by everyone by default: shipped files are installed as package data)."""
    from safetensors.torch import save_file

    meta = {**(metadata or {}), "kind": kind}
    if config is not None:
        meta[CONFIG_KEY] = config
    path = Path(path)
    with atomic_write(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
        if mode is not None:
            tmp.chmod(mode)
    return path


def load_tensors(path: str | Path, what: str, device: str | torch.device = "cpu",
                 kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file -> (tensors, metadata). Any failure is a CheckpointError naming ``what`` and the
    file; with ``kind``, a file whose ``kind`` metadata differs (when it has one) is refused too."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a bad or truncated file
        raise CheckpointError(f"cannot read {what} {path} as safetensors (truncated?): {e}") from e
    if kind is not None and meta.get("kind", kind) != kind:
        raise CheckpointError(f"{path} is a {meta['kind']!r} file, not a {what} ({kind!r})")
    return tensors, meta


def read_metadata(path: str | Path, what: str) -> dict[str, str]:
    """Only the metadata of a safetensors file (cheap: the header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(f"cannot read {what} {path} as safetensors (truncated?): {e}") from e


def config_json(meta: dict[str, str], path: str | Path, what: str) -> str:
    """The JSON config of a file's metadata (``config``, or a key older files used)."""
    for key in (CONFIG_KEY, *LEGACY_CONFIG_KEYS):
        if key in meta:
            return meta[key]
    raise CheckpointError(f"{path} has no {CONFIG_KEY!r} metadata: not an openmrt {what} file")


def parse_config(meta: dict[str, str], path: str | Path, what: str, from_json):
    """The file's config, rebuilt by ``from_json``; a broken one (bad JSON, unknown or missing fields) is a
    CheckpointError naming the file."""
    text = config_json(meta, path, what)
    try:
        return from_json(text)
    except (ValueError, TypeError, KeyError, AttributeError, OpenMRTError) as e:
        raise CheckpointError(f"{path}: its {what} config is broken ({type(e).__name__}: {e})") from e


def check_shapes(build, tensors: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Refuse a file whose tensors do not fit the model its config describes, before building it for real: the
    model is made on the meta device (no memory), so a damaged config cannot ask for a huge one first."""
    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except (ValueError, TypeError, RuntimeError, OpenMRTError) as e:
        raise CheckpointError(f"{path}: its {what} config does not make a model ({type(e).__name__}: {e})") from e
    have = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, extra = sorted(want.keys() - have.keys()), sorted(have.keys() - want.keys())
    bad = [k for k in want.keys() & have.keys() if want[k] != have[k]]
    if missing or extra or bad:
        detail = "; ".join(filter(None, [
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "",
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}" if extra else "",
            ", ".join(f"{k} is {have[k]}, expected {want[k]}" for k in sorted(bad)[:3])]))
        raise CheckpointError(f"{path}: the {what} weights do not fit their config: {detail}")

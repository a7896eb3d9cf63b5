"""Codec files, and the one codec resolver every command and library call goes through.

Our own files are safetensors with the CodecConfig as JSON in the metadata (openmrt/weights.py),
so a file alone rebuilds the model. Official SpectroStream weights (an MRT2 checkpoint's
``params/soundstream`` for the decoder and codebook, ``encoder.safetensors`` for the encoder)
load through convert.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from openmrt.codec.model import SpectroStream
from openmrt.codec.v2 import FORMAT as V2_KIND
from openmrt.config import CodecConfig
from openmrt.device import resolve_device
from openmrt.errors import CheckpointError
from openmrt.weights import LEGACY_CONFIG_KEYS, check_shapes, load_tensors, parse_config, read_metadata, save_tensors

KIND = "openmrt-codec"
DEMO_PATH = Path(__file__).resolve().parents[1] / "assets" / "demo" / "codec.safetensors"
OFFICIAL_ENCODER = Path("resources/spectrostream/encoder.safetensors")  # under an official bundle root

__all__ = ["DEMO_PATH", "KIND", "add_codec_args", "load_codec", "load_codec_file", "save_codec"]

CODEC_HELP = ("demo (the shipped demo codec, the default), an openmrt codec .safetensors, or an official MRT2 "
              "checkpoint file or bundle folder")


def add_codec_args(p: argparse.ArgumentParser) -> None:
    """``--codec`` and ``--encoder``: the flags of every command that picks a codec."""
    p.add_argument("--codec", help=CODEC_HELP)
    p.add_argument("--encoder", type=Path, help="official resources/spectrostream/encoder.safetensors, when it is "
                                                "not inside the --codec bundle folder")


def save_codec(model: SpectroStream, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write ``model``'s weights and config (atomically); ``extra`` adds string metadata (e.g. training step)."""
    return save_tensors(path, model.state_dict(), kind=KIND, config=model.config.to_json(), metadata=extra)


def load_codec_file(path: str | Path, device: torch.device | str = "cpu") -> SpectroStream:
    """Rebuild a codec saved by :func:`save_codec` (files from before the one config key load too), or a demo
    codec v2 file (openmrt/codec/v2.py: same token interface)."""
    from openmrt.codec.v2 import is_codec_v2_file, load_codec_v2

    if is_codec_v2_file(path):
        return load_codec_v2(path, resolve_device(device))
    tensors, meta = load_tensors(path, "codec checkpoint", kind=KIND)
    cfg = parse_config(meta, path, "codec", CodecConfig.from_json)
    check_shapes(lambda: SpectroStream(cfg), tensors, path, "codec")
    model = SpectroStream(cfg)
    model.load_state_dict(tensors)  # check_shapes proved the keys and shapes fit
    return model.to(resolve_device(device)).eval()


def load_codec(spec: str | Path | None = None, device: torch.device | str = "cpu",
               encoder: str | Path | None = None, need_encoder: bool = False) -> SpectroStream:
    """The codec named by ``spec``:

    * None or ``"demo"``: the shipped demo codec (the choice is printed when defaulting);
    * a file of ours (:func:`save_codec`), or a folder holding ``codec.safetensors`` (our bundles);
    * an official MRT2 checkpoint file (``checkpoints/mrt2_*.safetensors``: decoder and codebook) or an
      official bundle folder (one ``checkpoints/*.safetensors`` and ``resources/spectrostream/encoder.safetensors``).

    ``encoder``: the official ``encoder.safetensors`` when it is not at its place in the bundle folder.
    ``need_encoder``: refuse an official codec whose encoder is not found (encoding would use random weights).
    """
    if spec is None:
        print(f"openmrt: codec demo (the shipped demo codec, {DEMO_PATH})", file=sys.stderr)
    if spec is None or str(spec) == "demo":
        if not DEMO_PATH.is_file():
            raise CheckpointError(f"the demo codec {DEMO_PATH} is not installed: reinstall openmrt "
                                  "(scripts/install.sh), or name a codec file")
        return load_codec_file(DEMO_PATH, device)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "codec.safetensors").is_file():
            return load_codec_file(path / "codec.safetensors", device)
        ckpts = [p for p in sorted((path / "checkpoints").glob("*.safetensors")) if p.name != "encoder.safetensors"]
        if len(ckpts) != 1:
            raise CheckpointError(f"{path}: expected codec.safetensors, or exactly one checkpoints/*.safetensors of "
                                  f"an official bundle (found {[p.name for p in ckpts]}); pass the file itself")
        path = ckpts[0]
    elif not path.is_file():
        raise CheckpointError(f"no codec {str(spec)!r}: use demo, an openmrt codec file, or an official MRT2 "
                              "checkpoint file or bundle folder")
    meta = read_metadata(path, "codec checkpoint")
    if meta.get("kind", meta.get("format")) in (KIND, V2_KIND) or any(k in meta for k in LEGACY_CONFIG_KEYS):
        return load_codec_file(path, device)
    if meta.get("kind", "").startswith("openmrt-"):
        raise CheckpointError(f"{path} is an {meta['kind']} file, not a codec")
    return _official(path, encoder, need_encoder, device)


def _official(ckpt: Path, encoder: str | Path | None, need_encoder: bool, device) -> SpectroStream:
    from openmrt.codec.convert import load_official

    if encoder is None:
        encoder = next((p for p in (ckpt.parent.parent / OFFICIAL_ENCODER, ckpt.with_name("encoder.safetensors"))
                        if p.is_file()), None)
    if encoder is None:
        if need_encoder:
            raise CheckpointError(f"{ckpt}: the official encoder.safetensors is not in {OFFICIAL_ENCODER} of its "
                                  "bundle folder; pass it with --encoder")
        print(f"openmrt: {ckpt.name}: no SpectroStream encoder found; only decoding is trained", file=sys.stderr)
    model = SpectroStream()
    load_official(model, ckpt, encoder)
    return model.eval().to(resolve_device(device))

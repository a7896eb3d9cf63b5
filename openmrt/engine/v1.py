"""v1 bundles: an official T5X LM checkpoint folder and the SpectroStream decoder + RVQ it decodes with.

Layout (openmrt.hub.v1_spec): ``checkpoints/llm_{base_x4286,large_x3047}_c1860k/`` (the released ``.tar``
extracted), ``resources/spectrostream/{decoder,quantizer,encoder}.safetensors`` (the SpectroStream files of the
MRT2 release, under ``params/soundstream/`` and ``params/encoder/``). v1 reads 16 RVQ levels, which the
64-level table holds. The codec's size is read from the files' shapes, so a small test codec loads the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from openmrt import hub
from openmrt.codec.convert import convert_official, load_official, load_official_state, read_official_file
from openmrt.codec.model import SpectroStream
from openmrt.config import CODEC_PRESETS, CodecConfig
from openmrt.engine.bundle import Bundle
from openmrt.errors import CheckpointError
from openmrt.lm_v1.t5x import load_t5x

LEVELS = 16
CODEC_PREFIX = "params/soundstream/"
DECODER_FILE, QUANTIZER_FILE, ENCODER_FILE = (f"resources/spectrostream/{p}.safetensors"
                                              for p in ("decoder", "quantizer", "encoder"))


def codec_config_for(flat: dict[str, torch.Tensor], origin: Path) -> CodecConfig:
    """The codec preset whose decoder and RVQ fit these official tensors, with the file's number of levels."""
    emb = flat.get(CODEC_PREFIX + "quantizer/embedding")
    if emb is None or emb.dim() != 3 or emb.shape[0] < LEVELS:
        shape = None if emb is None else list(emb.shape)
        raise CheckpointError(f"{origin}: {CODEC_PREFIX}quantizer/embedding is {shape}; v1 needs an RVQ table of "
                              f">= {LEVELS} levels [Q, 1024, D]")
    meta = {k: torch.empty(v.shape, device="meta") for k, v in flat.items()}
    first_error = None
    for preset in CODEC_PRESETS.values():
        cfg = dataclasses.replace(preset, num_quantizers=emb.shape[0], token_levels=LEVELS)
        try:
            with torch.device("meta"):
                convert_official(SpectroStream(cfg), meta, ("decoder", "quantizer"))
            return cfg
        except CheckpointError as e:
            first_error = first_error or e
    raise CheckpointError(f"{origin}: the SpectroStream decoder fits no codec size ({first_error})")


def load_v1_codec(decoder: Path, quantizer: Path, encoder: Path | None = None) -> SpectroStream:
    """SpectroStream from separate decoder and RVQ files (and the encoder, for audio context, when given)."""
    flat = read_official_file(decoder, (CODEC_PREFIX,)) | read_official_file(quantizer, (CODEC_PREFIX,))
    codec = SpectroStream(codec_config_for(flat, decoder.parent))
    load_official_state(codec, flat, ("decoder", "quantizer"))
    load_official(codec, encoder_file=encoder)  # the encoder, as for MRT2 (nothing when None)
    return codec.eval()


def is_t5x(path: Path) -> bool:
    """A T5X checkpoint folder (or its ``checkpoint`` file, or a folder holding one ``checkpoint_*``)."""
    try:
        hub.t5x_folder(path)
        return True
    except CheckpointError:
        return False


def _codec_files(folder: Path) -> tuple[Path, Path, Path | None]:
    """The codec files for a checkpoint given by path: in the layout root above it, else in the hub's roots."""
    for root in [*folder.resolve().parents, *hub.roots()]:
        if (root / DECODER_FILE).is_file() and (root / QUANTIZER_FILE).is_file():
            enc = root / ENCODER_FILE
            return root / DECODER_FILE, root / QUANTIZER_FILE, enc if enc.is_file() else None
    raise CheckpointError(f"{folder}: found the v1 LM but not the SpectroStream codec it decodes with: put "
                          f"{DECODER_FILE} and {QUANTIZER_FILE} in the layout root above it or in one of "
                          f"{', '.join(map(str, hub.roots()))} (`openmrt models download mrt_v1_base` says where "
                          "to fetch them)")


def _bundle(ckpt: Path, codec: SpectroStream, name: str) -> Bundle:
    return Bundle(name, load_t5x(ckpt), codec)


def v1_bundle_from_spec(spec: hub.BundleSpec, search: list[Path] | None = None) -> Bundle:
    """A registered v1 bundle, after checking its files are there (hub.verify)."""
    paths = hub.verify(spec, search)
    ckpt = next(f for f in spec.files if f.kind == "t5x")
    codec = load_v1_codec(paths[DECODER_FILE], paths[QUANTIZER_FILE], paths.get(ENCODER_FILE))
    return _bundle(hub.t5x_folder(paths[ckpt.path]), codec, spec.name)


def v1_bundle_from_path(path: Path) -> Bundle:
    """A T5X checkpoint folder given by path (``--model PATH``); a ``.tar`` not yet extracted is named as such."""
    if path.is_file() and path.suffix == ".tar":
        raise CheckpointError(f"{path} is the T5X archive: extract it first (mkdir -p {path.with_suffix('')} && "
                              f"tar -xf {path} -C {path.with_suffix('')}) and pass the folder")
    folder = hub.t5x_folder(path)  # CheckpointError naming what is missing
    return _bundle(folder, load_v1_codec(*_codec_files(folder)), path.name)

"""Model files: which bundles exist, where their files live on disk, and whether they are sound.

Official bundles (``mrt2_small``, ``mrt2_base``) use the release's own layout
(shared/spec/musiccoca_assets_api.md §2): paths relative to a root mirror the Hugging Face repo
``google/magenta-realtime-2`` and the GCS bucket, so files a user already downloaded for the
official app are reused as they are. Roots are searched per file, in this order:

1. ``$OPENMRT_HOME`` (when set);
2. ``$MAGENTA_HOME/magenta-rt-v2`` (``MAGENTA_HOME`` defaults to ``~/Documents/Magenta``).

The ``demo`` bundle ships inside the package (``openmrt/assets/demo/``). Downloading
(:mod:`openmrt.hub_download`) only happens when the user asks for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from openmrt.errors import CheckpointError

REPO_ID = "google/magenta-realtime-2"
HF_URL = "https://huggingface.co/" + REPO_ID + "/resolve/main/"
GCS_URL = "https://storage.googleapis.com/magenta-rt-public/magenta-rt-2/"
DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"
RECORD = "openmrt_verified.json"  # sha256 of files that passed verification, next to them

OFFICIAL_LICENCE = "CC-BY-4.0"
OFFICIAL_ATTRIBUTION = (
    "Magenta RealTime 2 model weights by Google (Magenta team), licensed CC-BY-4.0 "
    "(https://creativecommons.org/licenses/by/4.0/), from huggingface.co/google/magenta-realtime-2; "
    "further usage terms in its model card."
)
DEMO_LICENCE = "Apache-2.0"
DEMO_ATTRIBUTION = "openmrt demo bundle, trained by the openmrt authors on synthetic (SoundFont-rendered) data."


class HubError(CheckpointError):
    """A bundle's files are missing, incomplete, corrupt or cannot be downloaded (the message says what to do)."""


@dataclass(frozen=True)
class HubFile:
    """One file of a bundle. ``path`` is relative to a root and equal to its repo path."""

    path: str
    role: str
    approx_bytes: int | None = None  # the spec gives no exact sizes; used for display and a sanity floor
    required: bool = True  # optional files add features (audio in, text prompts) but not playback
    kind: str = "other"  # "checkpoint" (LM + codec decoder), "encoder" (codec encoder), "t5x" (a v1 LM checkpoint
    # folder), "decoder" / "quantizer" (SpectroStream parts as separate files), "other"


@dataclass(frozen=True)
class BundleSpec:
    """A named bundle: its files, the presets they fit, and the licence to show."""

    name: str
    description: str
    files: tuple[HubFile, ...]
    lm_preset: str
    codec_preset: str
    licence: str = OFFICIAL_LICENCE
    attribution: str = OFFICIAL_ATTRIBUTION
    shipped: bool = False  # lives in the package (demo), nothing to download
    family: str = "mrt2"  # "v1": the original Magenta RT (T5X LM in 2 s chunks, openmrt.engine.v1)

    @property
    def approx_bytes(self) -> int:
        return sum(f.approx_bytes or 0 for f in self.files)


_MUSICCOCA = (  # style model (MusicCoCa) files: needed for text/audio prompts, not for playing tokens
    ("spm.model", "MusicCoCa tokenizer", None),
    ("text_encoder.tflite", "MusicCoCa text tower", 418_000_000),
    ("audio_preprocessor.tflite", "MusicCoCa audio features", None),
    ("music_encoder.tflite", "MusicCoCa audio tower", None),
    ("pretrained_vector_quantizer.tflite", "MusicCoCa RVQ", None),
    ("mapper.tflite", "text-to-audio mapper", None),
)


def official_spec(name: str, lm_preset: str, codec_preset: str = "spectrostream",
                  checkpoint_bytes: int | None = None, description: str = "") -> BundleSpec:
    """An official-layout bundle: ``checkpoints/<name>.safetensors`` + encoder + MusicCoCa files.

    Also the clean way to describe another official-layout bundle (tests use the ``tiny`` LM preset).
    """
    files = (
        HubFile(f"checkpoints/{name}.safetensors", "LM + codec decoder + RVQ", checkpoint_bytes, True, "checkpoint"),
        HubFile("resources/spectrostream/encoder.safetensors", "codec encoder (audio in)",
                37_000_000 if codec_preset == "spectrostream" else None, False, "encoder"),
        *(HubFile(f"resources/musiccoca/{f}", role, size, False) for f, role, size in _MUSICCOCA),
    )
    return BundleSpec(name, description, files, lm_preset, codec_preset)


V1_REPO_ID = "google/magenta-realtime"
V1_HF_URL = "https://huggingface.co/" + V1_REPO_ID + "/resolve/main/"
V1_GCS_URL = "https://storage.googleapis.com/magenta-rt-public/"
V1_ATTRIBUTION = (
    "Magenta RealTime (v1) model weights by Google (Magenta team), licensed CC-BY-4.0 "
    "(https://creativecommons.org/licenses/by/4.0/), from huggingface.co/google/magenta-realtime; "
    "further usage terms in its model card."
)


def v1_spec(name: str, lm_preset: str, archive: str, approx_bytes: int | None, description: str = "") -> BundleSpec:
    """A v1 bundle: the T5X checkpoint ``checkpoints/<archive>.tar`` extracted to ``checkpoints/<archive>/``, and the
    SpectroStream decoder + RVQ (16 of its levels) and MusicCoCa files, which v1 shares with MRT2's release."""
    files = (
        HubFile(f"checkpoints/{archive}", f"T5X LM (extracted {archive}.tar)", approx_bytes, True, "t5x"),
        HubFile("resources/spectrostream/decoder.safetensors", "codec decoder", 143_000_000, True, "decoder"),
        HubFile("resources/spectrostream/quantizer.safetensors", "codec RVQ", 67_000_000, True, "quantizer"),
        HubFile("resources/spectrostream/encoder.safetensors", "codec encoder (audio in)", 37_000_000, False,
                "encoder"),
        *(HubFile(f"resources/musiccoca/{f}", role, size, False) for f, role, size in _MUSICCOCA),
    )
    return BundleSpec(name, description, files, lm_preset, "spectrostream", attribution=V1_ATTRIBUTION, family="v1")


def registry(extra: Iterable[BundleSpec] = ()) -> dict[str, BundleSpec]:
    """Every known bundle by name (a fresh dict: no module-level mutable state)."""
    specs = [
        BundleSpec("demo", "our small bundle, plays offline in real time on a CPU",
                   (HubFile("lm.safetensors", "LM", None, True), HubFile("codec.safetensors", "codec", None, True),
                    HubFile("style.safetensors", "style model (text/audio prompts)", None, False)),
                   "demo", "demo", DEMO_LICENCE, DEMO_ATTRIBUTION, shipped=True),
        # Sizes: fp32 parameter counts (mrt2_lm.md §1 + 52.46M codec) × 4 bytes (the spec's derived figures).
        official_spec("mrt2_small", "mrt2_small", checkpoint_bytes=1_128_777_504,
                      description="official 230M model (a GPU for real time)"),
        official_spec("mrt2_base", "mrt2_base", checkpoint_bytes=9_836_654_368,
                      description="official 2.4B model (a large GPU for real time)"),
        # Sizes: float32 parameters (mrt_v1.md §1: base 347,873,472; large 761,651,456 by its shapes) x 4 bytes.
        v1_spec("mrt_v1_base", "base", "llm_base_x4286_c1860k", 1_391_493_888,
                description="original Magenta RT, 2 s chunks (a large GPU; seconds of control latency)"),
        v1_spec("mrt_v1_large", "large", "llm_large_x3047_c1860k", 3_046_605_824,
                description="original Magenta RT 760M, 2 s chunks (a large GPU; seconds of control latency)"),
        *extra,
    ]
    return {s.name: s for s in specs}


def roots(env: Mapping[str, str] | None = None) -> list[Path]:
    """The roots searched for official-layout files, in order."""
    env = os.environ if env is None else env
    out = []
    if env.get("OPENMRT_HOME"):
        out.append(Path(env["OPENMRT_HOME"]).expanduser())
    out.append(magenta_root(env))
    return out


def magenta_root(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("MAGENTA_HOME") or "~/Documents/Magenta").expanduser() / "magenta-rt-v2"


def _candidates(f: HubFile) -> list[str]:
    # 2.0.3 quirk (spectrostream.md §10): its MLX loader reads the encoder next to the checkpoint.
    return [f.path, "checkpoints/encoder.safetensors"] if f.kind == "encoder" else [f.path]


def locate(spec: BundleSpec, search: Iterable[Path] | None = None) -> dict[str, Path | None]:
    """Each file of ``spec`` -> the first existing copy in the search roots, or None."""
    if spec.shipped:
        return {f.path: (DEMO_DIR / f.path if (DEMO_DIR / f.path).is_file() else None) for f in spec.files}
    search = roots() if search is None else list(search)
    found: dict[str, Path | None] = {}
    for f in spec.files:
        hits = (root / rel for root in search for rel in _candidates(f))
        found[f.path] = next((p for p in hits if (p.is_dir() if f.kind == "t5x" else p.is_file())), None)
    return found


def shipped_parts(spec: BundleSpec) -> str:
    """The roles of a shipped bundle's files that are in the package, e.g. "codec + style model"."""
    found = locate(spec)
    return " + ".join(f.role.split(" (")[0] for f in spec.files if found[f.path]) or "nothing"


def is_installed(spec: BundleSpec, search: Iterable[Path] | None = None) -> bool:
    found = locate(spec, search)
    return all(found[f.path] is not None for f in spec.files if f.required)


def missing_message(spec: BundleSpec, missing: Iterable[HubFile], dest: Path | None = None) -> str:
    """What to download from where, and where to put it."""
    dest = dest or roots()[0]
    if spec.family == "v1":
        return _v1_missing_message(spec, missing, dest)
    lines = [f"{spec.name}: download these files (repo {REPO_ID} on Hugging Face, or the public GCS bucket):"]
    for f in missing:
        size = f" (~{human(f.approx_bytes)})" if f.approx_bytes else ""
        lines.append(f"  {f.path}{size}\n    from {HF_URL}{f.path}\n      or {GCS_URL}{f.path}\n"
                     f"    to   {dest / f.path}")
    lines.append(f"or run `openmrt models download {spec.name}` when online (searched: "
                 f"{', '.join(str(r) for r in roots())}; set OPENMRT_HOME or MAGENTA_HOME to look elsewhere)")
    return "\n".join(lines)


def _v1_missing_message(spec: BundleSpec, missing: Iterable[HubFile], dest: Path) -> str:
    lines = [f"{spec.name}: these files are missing (searched: {', '.join(str(r) for r in roots())}; set OPENMRT_HOME "
             "or MAGENTA_HOME to look elsewhere, or pass --model PATH to an extracted T5X checkpoint folder):"]
    for f in missing:
        size = f" (~{human(f.approx_bytes)})" if f.approx_bytes else ""
        if f.kind == "t5x":
            tar = f"{f.path}.tar"
            here = next((r / tar for r in roots() if (r / tar).is_file()), None)
            if here is not None:
                lines.append(f"  {f.path}/: {here} is not extracted yet: mkdir -p {here.with_suffix('')} && "
                             f"tar -xf {here} -C {here.with_suffix('')}")
                continue
            lines.append(f"  {f.path}/{size}: fetch {tar}\n    from {V1_HF_URL}{tar}\n      or {V1_GCS_URL}{tar}\n"
                         f"    and extract it: mkdir -p {dest / f.path} && tar -xf {Path(tar).name} -C {dest / f.path}")
        else:
            lines.append(f"  {f.path}{size}\n    from {HF_URL}{f.path}\n      or {GCS_URL}{f.path}\n"
                         f"    to   {dest / f.path}")
    lines.append(f"or run `openmrt models download {spec.name}` when online (it fetches and extracts the archive)")
    return "\n".join(lines)


def human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return ""


# ---- verification ----------------------------------------------------------------------------------------------


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape from a safetensors header (no tensor is read); a truncated file is named as such."""
    from safetensors import safe_open

    size = path.stat().st_size
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for short or corrupt headers
        raise HubError(
            f"{path} is truncated or not a safetensors file ({size:,} bytes on disk: {e}); "
            "delete it and download it again (`openmrt models download NAME` resumes partial downloads)"
        ) from e


def check_official_shapes(shapes: Mapping[str, tuple[int, ...]], lm_preset: str | None, codec_preset: str,
                          parts: tuple[str, ...], origin: Path) -> None:
    """Keys and shapes against the converters' key maps, with models built on the meta device."""
    from openmrt.codec.convert import convert_official
    from openmrt.codec.model import SpectroStream
    from openmrt.config import codec_config, lm_config
    from openmrt.lm.convert import convert_state_dict
    from openmrt.lm.model import Depthformer

    flat = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    try:
        with torch.device("meta"):
            if lm_preset is not None:
                lm = Depthformer(lm_config(lm_preset))
                convert_state_dict(flat, lm.cfg, {k: v.shape for k, v in lm.state_dict().items()})
            if parts:
                convert_official(SpectroStream(codec_config(codec_preset)), flat, parts)
    except CheckpointError as e:
        raise HubError(f"{origin}: {e}") from e


def detect_presets(shapes: Mapping[str, tuple[int, ...]], origin: Path) -> tuple[str, str]:
    """(LM preset, codec preset) of an official checkpoint, read from its keys and shapes."""
    from openmrt.config import CODEC_PRESETS, LM_PRESETS
    from openmrt.lm.convert import PREFIX, key_map

    lm_keys = {k for k in shapes if k.startswith(PREFIX)}
    by_keys = [n for n, cfg in LM_PRESETS.items() if set(key_map(cfg)) == lm_keys]
    lm = next((n for n in by_keys if _fits(shapes, n, None, origin)), None)
    if lm is None:
        if not by_keys:
            raise HubError(f"{origin}: its {len(lm_keys)} params/depthformer/ keys match no LM preset "
                           f"({', '.join(LM_PRESETS)}); is it an MRT2 checkpoint?")
        check_official_shapes(shapes, by_keys[0], "spectrostream", (), origin)  # raises, naming the key
    codecs = list(CODEC_PRESETS)
    codec = next((c for c in codecs if _fits(shapes, None, c, origin)), None)
    if codec is None:
        check_official_shapes(shapes, None, codecs[0], ("decoder", "quantizer"), origin)  # raises, naming the key
    return lm, codec


def _fits(shapes: Mapping[str, tuple[int, ...]], lm: str | None, codec: str | None, origin: Path) -> bool:
    try:
        check_official_shapes(shapes, lm, codec or "spectrostream", ("decoder", "quantizer") if codec else (), origin)
        return True
    except HubError:
        return False


def sha256(path: Path, progress: bool = False) -> str:
    from tqdm import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, disable=not progress,
                                      desc=f"sha256 {path.name}", leave=False) as bar:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _record_path(path: Path, rel: str) -> Path:
    """The record sits in the root the file was found in."""
    root = path
    for _ in Path(rel).parts:
        root = root.parent
    return root / RECORD


def _check_record(path: Path, rel: str, full: bool) -> str | None:
    """Compare with the sha256 recorded at first verification; returns the sha256 if it was computed."""
    rec_file = _record_path(path, rel)
    rec = json.loads(rec_file.read_text()).get(rel) if rec_file.is_file() else None
    st = path.stat()
    if rec is None:
        return None
    if rec["size"] != st.st_size:
        raise HubError(f"{path} changed since it was verified ({st.st_size:,} bytes, recorded {rec['size']:,} "
                       f"in {rec_file}); download it again or delete the record to re-verify")
    if full or rec.get("mtime") != st.st_mtime:
        digest = sha256(path, progress=True)
        if digest != rec["sha256"]:
            raise HubError(f"{path}: sha256 {digest} differs from the one recorded in {rec_file} "
                           f"({rec['sha256']}); the file is corrupt or was replaced: download it again")
        return digest
    return rec["sha256"]


def _write_record(path: Path, rel: str, digest: str) -> None:
    rec_file = _record_path(path, rel)
    try:
        rec = json.loads(rec_file.read_text()) if rec_file.is_file() else {}
        st = path.stat()
        rec[rel] = {"sha256": digest, "size": st.st_size, "mtime": st.st_mtime}
        tmp = rec_file.with_name(RECORD + ".tmp")
        tmp.write_text(json.dumps(rec, indent=1, sort_keys=True))
        os.replace(tmp, rec_file)
    except OSError:  # a read-only copy still verifies; it just re-hashes next time
        pass


def forget(path: Path, rel: str) -> None:
    """Drop a file's recorded sha256 (it was just downloaded again)."""
    rec_file = _record_path(path, rel)
    if rec_file.is_file():
        rec = json.loads(rec_file.read_text())
        if rec.pop(rel, None) is not None:
            rec_file.write_text(json.dumps(rec, indent=1, sort_keys=True))


def verify_file(spec: BundleSpec, f: HubFile, path: Path, full: bool = False) -> str:
    """Size, header, keys and shapes; sha256 recorded the first time, checked after. Returns the sha256."""
    size = path.stat().st_size
    # Safetensors files are checked exactly by their headers; the rough floor is for the others (TFLite).
    if f.kind == "other" and f.approx_bytes and size < f.approx_bytes // 2:
        raise HubError(f"{path} is truncated: {size:,} bytes, expected about {f.approx_bytes:,}; "
                       "download it again (`openmrt models download` resumes)")
    if f.kind == "t5x":  # a folder: found here, read (keys and shapes checked) when loaded
        return _verify_t5x(path)
    known = _check_record(path, f.path, full)
    if known is not None:
        return known
    if f.kind in ("checkpoint", "encoder", "decoder", "quantizer"):
        shapes = safetensors_shapes(path)
        if f.kind == "checkpoint":
            check_official_shapes(shapes, spec.lm_preset, spec.codec_preset, ("decoder", "quantizer"), path)
        elif f.kind in ("decoder", "quantizer"):
            _check_codec_part(shapes, f.kind, path)
        elif spec.family == "v1":  # its codec size is read from the decoder's shapes when loaded
            if not any(k.startswith("params/encoder/") for k in shapes):
                raise HubError(f"{path} has no params/encoder/ tensors (not the SpectroStream encoder?)")
        else:
            check_official_shapes(shapes, None, spec.codec_preset, ("encoder",), path)
    elif size == 0:
        raise HubError(f"{path} is empty; download it again")
    digest = sha256(path, progress=True)
    _write_record(path, f.path, digest)
    return digest


def t5x_folder(path: Path) -> Path:
    """The folder holding a T5X ``checkpoint`` file: ``path``, its ``checkpoint_*`` folder, or one level further down
    (an archive that unpacks into a folder of its own). CheckpointError says what was looked for."""
    from openmrt.lm_v1.t5x import checkpoint_dir

    try:
        return checkpoint_dir(path)
    except CheckpointError as first:
        below = sorted({c.parent for c in path.glob("*/*/checkpoint") if c.is_file()}) if path.is_dir() else []
        if len(below) == 1:
            return below[0]
        raise first from None


def _verify_t5x(path: Path) -> str:
    """An extracted T5X checkpoint folder: its ``checkpoint`` file is found (keys and shapes are checked on load)."""
    if not path.is_dir():
        raise HubError(f"{path} is not a folder: extract the T5X archive into it (tar -xf NAME.tar -C {path})")
    try:
        return str(t5x_folder(path) / "checkpoint")
    except CheckpointError as e:
        raise HubError(str(e)) from e


def _check_codec_part(shapes: Mapping[str, tuple[int, ...]], part: str, path: Path) -> None:
    """A separate SpectroStream decoder or RVQ file holds its part under params/soundstream/ (v1 needs 16 levels)."""
    prefix = f"params/soundstream/{part}/"
    if not any(k.startswith(prefix) for k in shapes):
        raise HubError(f"{path} has no {prefix} tensors (not the SpectroStream {part}?)")
    emb = shapes.get("params/soundstream/quantizer/embedding")
    if part == "quantizer" and (emb is None or len(emb) != 3 or emb[0] < 16):
        raise HubError(f"{path}: params/soundstream/quantizer/embedding is {emb}, expected [>= 16 levels, 1024, D]")


def verify(spec: BundleSpec, search: Iterable[Path] | None = None, full: bool = False) -> dict[str, Path]:
    """Verify every file present; raise HubError naming what is missing (required) or broken."""
    found = locate(spec, search)
    missing = [f for f in spec.files if f.required and found[f.path] is None]
    if missing and spec.shipped:
        raise HubError(f"the {spec.name} bundle is not complete in this package yet ({DEMO_DIR} lacks "
                       f"{', '.join(f.path for f in missing)}; it ships {shipped_parts(spec)} only): play "
                       "`openmrt play --model random:tiny` (noise) or an official bundle "
                       "(`openmrt models download mrt2_small`)")
    if missing:
        raise HubError(missing_message(spec, missing))
    for f in spec.files:
        if found[f.path] is not None and not spec.shipped:
            verify_file(spec, f, found[f.path], full)
    return {k: v for k, v in found.items() if v is not None}


def attribution(spec_name: str) -> str:
    """Licence and attribution line for a bundle (for `models list` and the web page footer)."""
    spec = registry().get(spec_name)
    if spec is None:
        return ""
    return f"{spec.licence}: {spec.attribution}"

"""Model bundles: the LM, the codec its tokens belong to, and the style model its style tokens come from.

Tokens from one bundle mean nothing to another, so everything that plays goes through a bundle.
``random:LM[+CODEC]`` builds a seeded random-weight bundle (tests, benchmarks, trying the
engine without trained weights); ``demo``, ``mrt2_small``, ``mrt2_base`` and paths are found and
verified by :mod:`openmrt.hub`; ``auto`` picks the best installed one for this machine.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from openmrt import hub
from openmrt.codec.model import SpectroStream
from openmrt.config import codec_config, lm_config
from openmrt.device import cpu_cores, resolve_device, resolve_dtype
from openmrt.errors import CheckpointError, ConfigError
from openmrt.frame import FRAME_MS, FRAME_SAMPLES
from openmrt.lm.generate import best_setting
from openmrt.lm.model import Depthformer

log = logging.getLogger(__name__)

# Random weights are noise: the decoder is scaled to RMS 0.1, i.e. -26 dBFS after the official 0.5x output stage,
# which keeps the noise's peaks (up to ~17x its RMS once running) below full scale.
RANDOM_DECODER_RMS = 0.1


@dataclass(frozen=True)
class Speed:
    """How a bundle's frames run (docs/benchmarks.md has what each costs and changes).

    lm: "eager" (exact), "int8" (CPU: int8 weights, >= 95 % greedy agreement on mrt2_small), "compiled" (CPU:
        the eager step compiled by TorchInductor before the first frame) or "graphs" (CUDA graphs of the whole
        frame step); see openmrt.lm.generate.
    codec: "reference" (SpectroStream.decode_step), or openmrt.codec.fast's CPU decoder: "f32" (equal to
        the reference to float rounding), "bf16" (38 dB SNR) or "int8" (30 dB SNR).
    pipeline: the codec decode on its own thread, overlapping the next frame's LM (+1 frame of latency).
    """

    lm: str = "eager"
    codec: str = "reference"
    pipeline: bool = False

    def uncompiled(self) -> Speed:
        """The same without compiling the LM (eager): for streams where a compile would cost more than it saves
        (a short offline render) or would stop a playing one (a restart mid-session)."""
        return replace(self, lm="eager") if self.lm == "compiled" else self

    def describe(self) -> str:
        codec = "reference codec" if self.codec == "reference" else f"{self.codec} codec"
        return f"{self.lm} LM, {codec}" + (", 2-stage pipeline" if self.pipeline else "")


@dataclass
class Bundle:
    name: str
    lm: Depthformer  # or a v1 LM (openmrt.lm_v1.model.V1LM), played in 2 s chunks by openmrt.engine.chunks
    codec: SpectroStream  # or the demo codec v2 (openmrt.codec.v2.CodecV2): the same token interface
    style: object | None = None  # a StyleSource (openmrt.style), when the bundle has one
    noise: bool = False  # random weights: what plays is noise (the commands say so)
    speed: Speed = field(default_factory=Speed)  # how streams of this bundle run (load_bundle picks it)
    prepared: dict = field(default_factory=dict, repr=False)  # packed LM / fast codec, made once per setting

    def to(self, device: torch.device | str, lm_dtype: torch.dtype = torch.float32) -> Bundle:
        self.lm.to(device=device, dtype=lm_dtype)
        self.codec.to(device=device)  # the codec stays f32, as in the official code
        self.prepared.clear()  # packed weights are snapshots of the old place
        return self


def random_bundle(lm: str = "tiny", codec: str = "demo", seed: int = 0) -> Bundle:
    """A bundle with seeded random weights (no files needed)."""
    gen = torch.Generator().manual_seed(seed)
    model = Depthformer(lm_config(lm))
    codec_model = SpectroStream(codec_config(codec))
    with torch.no_grad():
        for m in (model, codec_model):
            for name, p in m.named_parameters():
                if name.endswith("per_dim_scale") or ("norm" in name and name.endswith("bias")):
                    continue
                if "norm" in name:
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if "sink" in name else 0.02))
        for layer in codec_model.modules():  # codec convs: fan-in scaled so the audio stays bounded
            w = getattr(layer, "weight", None)
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and w is not None:
                fan_in = w[0].numel() if isinstance(layer, torch.nn.Conv2d) else w[:, 0].numel()
                w.copy_(torch.randn(w.shape, generator=gen) / fan_in**0.5)
        codec_model.quantizer.embedding.normal_(0.0, 1.0, generator=gen)
        # Random weights make spectra with a large smooth part, which the iSTFT turns into a full-scale click
        # every 10 ms hop, and random biases against the zeroed history of a fresh stream make a loud start: a
        # last conv with kernels of zero mean over time and a decoder without biases remove most of both. The
        # output is linear in the last conv: scale it to the safe level.
        for name, p in codec_model.decoder.named_parameters():
            if name.endswith("bias") and "norm" not in name:
                p.zero_()
        last = codec_model.decoder.output_layer.base_conv_last
        last.weight.sub_(last.weight.mean(dim=2, keepdim=True))
        probe = codec_model.decode(torch.randint(0, 1024, (1, 16, 12), generator=gen))[:, 2 * FRAME_SAMPLES:]
        last.weight.mul_(RANDOM_DECODER_RMS / float(probe.std()))
        model.to_logits.weight.mul_(50.0)  # peaky logits, so sampled tokens are not uniform noise
    return Bundle(f"random:{lm}+{codec}", model.eval(), codec_model.eval(), noise=True)


def load_bundle(spec: str, seed: int = 0, device: str | torch.device | None = None,
                dtype: str | torch.dtype | None = None) -> Bundle:
    """The one bundle loader: ``demo``, ``mrt2_small``, ``mrt2_base``, a PATH, ``random:LM[+CODEC]`` or
    ``auto`` (the best installed bundle that runs in real time on ``device``).

    The bundle is moved to ``device`` (``--device``: auto, cpu, cuda[:N]) with the LM in ``dtype``
    (``--dtype``; auto = bfloat16 on CUDA, float32 on the CPU) and the codec in float32. The choice is
    printed on stderr, with the reason when ``auto`` picked it."""
    dev = resolve_device(device)
    lm_dtype = resolve_dtype(dtype, dev)
    reason = ""
    if spec == "auto":
        spec, reason = choose_auto(dev)
    bundle = _load(spec, seed)
    bundle.to(dev, lm_dtype)
    bundle.speed = choose_speed(bundle, dtype)
    where = f"{dev} ({str(lm_dtype).removeprefix('torch.')} {bundle.speed.describe()})"
    print(f"openmrt: model {bundle.name} on {where}" + (f": {reason}" if reason else ""), file=sys.stderr)
    if not isinstance(bundle.lm, Depthformer):
        print("openmrt: v1 plays 2 s chunks from 10 s of context and cannot react within a chunk: a style change is "
              "heard 2-4 s later live (0-2 s offline); notes and drums are ignored; the first chunk is generated "
              "before any sound", file=sys.stderr)
    if bundle.noise:
        print("openmrt: WARNING: random weights: this plays noise, at a safe level (about -26 dBFS); "
              "`openmrt models list` shows the trained bundles", file=sys.stderr)
    return bundle


def choose_speed(bundle: Bundle, dtype: str | torch.dtype | None = "auto") -> Speed:
    """The frame setting for ``--dtype`` on the bundle's device: ``auto`` is the fastest measured one
    (docs/benchmarks.md); ``float32``/``bfloat16`` keep the LM exact; ``int8`` asks for int8 on the CPU.
    The CPU pipelines LM and codec whenever the process may use two cores."""
    from openmrt.codec.fast import bf16_supported

    if not isinstance(bundle.lm, Depthformer):
        return Speed()  # v1: whole chunks, no per-frame settings
    dev = next(bundle.lm.parameters()).device
    name = "auto" if dtype is None else dtype if isinstance(dtype, str) else "explicit"
    if dev.type == "cuda":
        return Speed(lm="graphs" if name in ("", "auto") else "eager")
    lm = best_setting("cpu", bundle.lm)  # int8 where it pays (the LM's own rule)
    full_codec = getattr(bundle.codec.config, "width", 0.0) >= 1.0
    reduced = "bf16" if bf16_supported() else "int8"
    if name in ("", "auto"):
        codec = reduced if lm == "int8" or full_codec else "f32"
    elif name == "int8":
        lm, codec = "int8", reduced
    else:
        lm, codec = "eager", "f32"
    if next(bundle.lm.parameters()).dtype != torch.float32 and lm == "int8":
        lm = "eager"  # int8 packs from a float32 model
    if not isinstance(bundle.codec, SpectroStream):
        codec = "reference"  # the demo codec v2: its decode_step is its fast path (numba phase head)
    # Pipeline whenever two cores exist: each stage runs one thread, so a busy neighbour only slows it in
    # proportion (no spinning collapse), and the 1-minute load average (our own warm-up included) is no
    # reason to give up the second core: it once cost a 10-minute soak 19 drops. Except beside a compiled LM:
    # side by side both slowed (demo: LM 9.3 -> 18.6 ms, codec 4.9 -> 7.1 ms a frame; the cause is not pinned
    # down, the generated code does release the interpreter lock); sequential is faster and one frame earlier.
    return Speed(lm=lm, codec=codec, pipeline=cpu_cores() >= 2 and lm != "compiled")


def _load(spec: str, seed: int) -> Bundle:
    if spec.startswith("random"):
        _, _, rest = spec.partition(":")
        lm, _, codec = (rest or "tiny").partition("+")
        return random_bundle(lm or "tiny", codec or "demo", seed)
    specs = hub.registry()
    if spec in specs:
        if specs[spec].family == "v1":
            from openmrt.engine.v1 import v1_bundle_from_spec

            return v1_bundle_from_spec(specs[spec])
        return bundle_from_spec(specs[spec])
    path = Path(spec).expanduser()
    if path.exists():
        from openmrt.engine.v1 import is_t5x, v1_bundle_from_path

        if is_t5x(path) or path.suffix == ".tar":
            return v1_bundle_from_path(path)
        return bundle_from_path(path)
    raise ConfigError(
        f"no model bundle {spec!r}: use demo, mrt2_small, mrt2_base, mrt_v1_base, mrt_v1_large, auto, "
        "random:LM[+CODEC] (e.g. random:tiny) or the path of a bundle folder, checkpoint or T5X checkpoint folder; "
        "`openmrt models list` shows what is installed"
    )


BASE_GPU_BYTES = 20e9  # mrt2_base in bfloat16 plus caches; below this a GPU gets mrt2_small


WARMUP_FRAMES, TIMED_FRAMES = 4, 16
REAL_TIME_MARGIN = 0.9  # keep up with 10 % to spare: a frame period over 36 ms at p90 is too close


def cpu_frame_ms(preset: str) -> float:
    """p90 frame period in ms of ``preset``'s LM with its codec (random weights: speed does not depend on
    them) at the fastest CPU setting, pipelined when two cores are free (about 20 s for mrt2_small)."""
    import time

    import numpy as np

    from openmrt import tokens as tk
    from openmrt.engine.frames import FrameStream

    codec = "spectrostream" if preset.startswith("mrt2") else "demo"
    b = Bundle(preset, Depthformer(lm_config(preset)).eval(), SpectroStream(codec_config(codec)).eval())
    b.speed = choose_speed(b, "auto")
    stream = FrameStream(b)
    cond = tk.make_conditioning()
    times = []
    for i in range(WARMUP_FRAMES + TIMED_FRAMES):
        t0 = time.perf_counter()
        stream.step(cond)
        if i >= WARMUP_FRAMES:
            times.append((time.perf_counter() - t0) * 1e3)
    stream.close()
    return float(np.percentile(times, 90))


def cpu_keeps_up(name: str, measure=cpu_frame_ms) -> tuple[bool, str]:
    """(whether bundle ``name`` plays in real time on this machine's CPU, why). The demo bundle is sized to;
    an official bundle is timed once per machine (cached in ~/.cache/openmrt/cpu_realtime.json, keyed by
    CPU, cores and torch version) with ``measure``."""
    if name == "demo":
        return True, "the demo bundle is sized for 2 CPU cores"
    import json
    import os
    import platform

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openmrt" / "cpu_realtime.json"
    key = f"{name}|{platform.processor() or platform.machine()}|{len(os.sched_getaffinity(0))}|{torch.__version__}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        print(f"openmrt: timing {name} on this CPU once (about 20 s) to see whether it keeps real time...",
              file=sys.stderr)
        known[key] = measure(name)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known, indent=1))
        except OSError:
            pass  # a read-only home only costs the next run the same 20 s
    ms = known[key]
    ok = ms <= REAL_TIME_MARGIN * FRAME_MS
    return ok, f"{ms:.0f} ms per 40 ms frame (p90) at the fastest CPU setting here"


def choose_auto(device: torch.device | str | None = None, search: list[Path] | None = None,
                gpu_bytes: int | None = None) -> tuple[str, str]:
    """(bundle, why) for ``--model auto`` on ``device`` (resolved with the --device rule).

    CUDA: mrt2_base when installed and the GPU has >= 20 GB, else mrt2_small when installed. CPU (or a GPU
    with no official bundle): the demo bundle when installed and ``cpu_keeps_up``, else random:tiny (noise).
    ``gpu_bytes`` overrides the GPU's memory (tests)."""
    dev = resolve_device(device)
    specs = hub.registry()
    if dev.type == "cuda":
        if gpu_bytes is None:
            gpu_bytes = torch.cuda.get_device_properties(dev).total_memory
        gb = f"{gpu_bytes / 1e9:.0f} GB"
        if hub.is_installed(specs["mrt2_base"], search) and gpu_bytes >= BASE_GPU_BYTES:
            return "mrt2_base", f"installed, and the GPU has {gb} (>= {BASE_GPU_BYTES / 1e9:.0f} GB)"
        if hub.is_installed(specs["mrt2_small"], search):
            why = "installed" + ("" if gpu_bytes >= BASE_GPU_BYTES else f"; the GPU's {gb} is too small for mrt2_base")
            return "mrt2_small", why
    where = "no official bundle is installed for the GPU" if dev.type == "cuda" else "running on the CPU"
    notes = []
    if dev.type == "cpu" and hub.is_installed(specs["mrt2_small"], search):
        ok, why = cpu_keeps_up("mrt2_small")
        if ok:
            return "mrt2_small", f"installed, and it keeps real time on this CPU: {why}"
        notes.append(f"mrt2_small is installed but too slow on this CPU ({why})")
    if hub.is_installed(specs["demo"]) and cpu_keeps_up("demo")[0]:
        return "demo", "; ".join([where, *notes, "the demo bundle plays in real time there"])
    return "random:tiny", "; ".join([
        where, *notes, "no trained bundle that plays there is installed, "
        "so this plays random weights; `openmrt models list` shows the options"])


def bundle_from_spec(spec: hub.BundleSpec, search: list[Path] | None = None) -> Bundle:
    """A registry bundle, after checking its files (quick: sizes and the recorded sha256)."""
    paths = hub.verify(spec, search)
    if spec.shipped:
        return _our_bundle(paths["lm.safetensors"], paths["codec.safetensors"], spec.name)
    ckpt = next(f for f in spec.files if f.kind == "checkpoint")
    enc = next(f for f in spec.files if f.kind == "encoder")
    return _official_bundle(paths[ckpt.path], paths.get(enc.path), spec.lm_preset, spec.codec_preset, spec.name)


def bundle_from_path(path: Path) -> Bundle:
    """A folder with our ``lm.safetensors`` + ``codec.safetensors``, an official-layout root with one
    ``checkpoints/*.safetensors``, or an official checkpoint file (its sizes are read from its shapes)."""
    if path.is_dir():
        if (path / "lm.safetensors").is_file():
            return _our_bundle(path / "lm.safetensors", path / "codec.safetensors", path.name)
        ckpts = [p for p in sorted((path / "checkpoints").glob("*.safetensors")) if p.name != "encoder.safetensors"]
        if len(ckpts) != 1:
            raise CheckpointError(
                f"{path}: expected lm.safetensors + codec.safetensors, or exactly one checkpoints/*.safetensors "
                f"(found {[p.name for p in ckpts]}); pass the file itself")
        path = ckpts[0]
    from safetensors import safe_open

    from openmrt.lm.checkpoint import KIND

    try:
        with safe_open(str(path), framework="pt") as f:
            ours = (f.metadata() or {}).get("kind") == KIND
    except Exception as e:
        raise CheckpointError(f"cannot read {path} as safetensors (truncated?): {e}") from e
    if ours:
        return _our_bundle(path, path.with_name("codec.safetensors"), path.stem)
    shapes = hub.safetensors_shapes(path)
    lm_preset, codec_preset = hub.detect_presets(shapes, path)
    root = path.parent.parent
    enc = next((p for p in (root / "resources/spectrostream/encoder.safetensors",
                            path.with_name("encoder.safetensors")) if p.is_file()), None)
    return _official_bundle(path, enc, lm_preset, codec_preset, path.stem)


def _our_bundle(lm_path: Path, codec_path: Path, name: str) -> Bundle:
    """Our LM + codec files, and the style model beside them when there is one (the LM was trained on
    its tokens, so ``--prompt`` needs no ``--style``)."""
    from openmrt.codec.checkpoint import load_codec
    from openmrt.lm.checkpoint import load_lm

    style = None
    if lm_path.with_name("style.safetensors").is_file():
        from openmrt.style import load_style

        style = load_style(str(lm_path.with_name("style.safetensors")))
    return Bundle(name, load_lm(lm_path), load_codec(codec_path), style)


def _official_bundle(ckpt: Path, encoder: Path | None, lm_preset: str, codec_preset: str, name: str) -> Bundle:
    from openmrt.codec.convert import load_official as load_codec_official
    from openmrt.lm.convert import load_official, read_checkpoint

    model = Depthformer(lm_config(lm_preset))
    load_official(model, read_checkpoint(ckpt))
    codec = SpectroStream(codec_config(codec_preset))
    load_codec_official(codec, ckpt, encoder)
    if encoder is None:  # playback needs only the decoder; audio input needs the encoder
        log.warning("%s: no SpectroStream encoder.safetensors found; audio input (encode) is untrained", name)
    return Bundle(name, model.eval(), codec.eval())

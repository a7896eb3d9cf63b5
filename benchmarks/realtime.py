"""Whole-frame speed: one LM step with sampling + one codec decode step to PCM, per 40 ms frame.

    python3 benchmarks/realtime.py --device cpu|cuda --model tiny|demo|mrt2_small|mrt2_base [--dtype D]
        [--streams N] [--frames N] [--best] [--peer official] --out FILE

Each configuration (setting x LM dtype x threads) runs in a fresh subprocess. With several rounds
(``--rounds``; 2 by default with ``--peer``) the configurations run interleaved, the order
reversed every other round, and each row pools its per-frame times over the rounds. FILE gets
``{"machine", "args", "rows": [{"impl", "model", "device", "dtype", "setting", "streams", "frames",
"p50_ms", "p95_ms", "p99_ms", "max_ms", "rtf" (= 40 / p50), "threads", "part", ...}]}``; ``part`` is
``frame`` (the whole frame) or, as extra rows, ``lm`` / ``codec``. A histogram goes beside FILE (.png).

Models: the LM preset of that name at its real shapes; the codec is the full SpectroStream for
mrt2_* and the demo preset for tiny/demo. mrt2_small uses the seeded golden weights
(shared/golden/seeded: the weights the official peer rebuilds) when they are found, the others
seeded random weights made on the device (speed does not depend on the values).

``--best`` runs openmrt's fastest known setting(s) on the device (table BEST below; the fastest
measured row is marked ``"fastest": true``). ``--peer official`` (mrt2_small on the CPU) also runs
the official JAX code (shared/peers/official_jax, in its own venv made by its setup.sh; a
benchmark peer, never imported) in the same rounds, on the same seeded weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FRAME_MS, frame_stats, loadavg, machine, run_group  # noqa: E402

from openmrt import tokens as tk  # noqa: E402
from openmrt.device import free_cores, resolve_device, resolve_dtype  # noqa: E402

MODELS = ("tiny", "demo", "mrt2_small", "mrt2_base")
CODEC_OF = {"tiny": "demo", "demo": "demo", "mrt2_small": "spectrostream", "mrt2_base": "spectrostream"}
STYLE = [660, 597, 668, 315, 857, 217, 930, 175, 655, 343, 534, 137]  # the peer's fixed style tokens


class Unavailable(RuntimeError):
    """A setting whose API is not on this branch (recorded in the row, not a crash)."""


# ----------------------------------------------------------------------------------------------
# Weights


def shared_dir(what: str) -> Path | None:
    """shared/WHAT: $OPENMRT_SHARED, else the nearest shared/ in or above the repository."""
    env = os.environ.get("OPENMRT_SHARED")
    for base in ([Path(env)] if env else []) + [d / "shared" for d in (ROOT, *ROOT.parents)]:
        if (base / what).exists():
            return base / what
    return None


def golden_dir(given: str | None = None) -> Path | None:
    """shared/golden with the seeded files: --golden, $OPENMRT_GOLDEN or shared_dir (None: not found)."""
    for cand in (given, os.environ.get("OPENMRT_GOLDEN"), shared_dir("golden")):
        if cand and (Path(cand) / "seeded" / "lm_param_keys.txt").is_file():
            return Path(cand)
    return None


def seeded_weights(golden: Path) -> tuple[dict, dict]:
    """The golden seeded mrt2_small LM and codec decode-path weights (official keys), fingerprint-checked."""
    sys.path.insert(0, str(ROOT / "tests"))
    from seeded import CODEC_SEED, LM_SEED, check_fingerprints, rebuild

    d = golden / "seeded"
    lm = rebuild(d / "lm_param_keys.txt", LM_SEED)
    codec = rebuild(d / "codec_param_keys.txt", CODEC_SEED, only="params/soundstream/")
    bad = check_fingerprints(lm, d / "weights_fingerprint.json", "lm")
    bad += check_fingerprints(codec, d / "weights_fingerprint.json", "codec")
    if bad:
        raise RuntimeError(f"seeded weights differ from the golden fingerprints (NumPy {np.__version__}): {bad[:3]}")
    return lm, codec


@torch.no_grad()
def random_init_(module: torch.nn.Module, seed: int) -> None:
    """Seeded fan-in-scaled normal weights on the module's own device (keeps activations O(1),
    so no denormals or infs skew the timing); 1-D parameters keep their constructor values."""
    gen = None
    for p in module.parameters():
        if gen is None:
            gen = torch.Generator(device=p.device).manual_seed(seed)
        if p.dim() >= 2:
            p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)


def build_bundle(model: str, device: torch.device, dtype: torch.dtype, weights: str, golden: Path | None,
                 seed: int = 0):
    """(Bundle on the device, what weights it got)."""
    from openmrt.codec import SpectroStream, load_official_state
    from openmrt.config import codec_config, lm_config
    from openmrt.engine.bundle import Bundle, random_bundle
    from openmrt.lm.convert import load_official
    from openmrt.lm.model import Depthformer

    if model in ("tiny", "demo"):  # small: the engine's own random bundle, made on the CPU
        return random_bundle(model, CODEC_OF[model], seed).to(device, dtype), "random_bundle"
    if weights == "seeded":
        if model != "mrt2_small" or golden is None:
            raise ValueError("seeded weights exist for mrt2_small only and need shared/golden (--golden)")
        lm_w, codec_w = seeded_weights(golden)
        lm = Depthformer(lm_config(model))
        load_official(lm, lm_w)
        codec = SpectroStream(codec_config("spectrostream"))
        load_official_state(codec, codec_w, ("decoder", "quantizer"))
        return Bundle(f"seeded:{model}", lm.eval(), codec.eval()).to(device, dtype), "seeded_golden"
    with torch.device(device):  # made where they run: mrt2_base is 9.6 GB in float32
        lm = Depthformer(lm_config(model))
        codec = SpectroStream(codec_config(CODEC_OF[model]))
    random_init_(lm, seed)
    random_init_(codec, seed + 1)
    return Bundle(f"random:{model}", lm.eval(), codec.eval()).to(device, dtype), "random_on_device"


def conditioning(streams: int, device: torch.device) -> torch.Tensor:
    """[N, 144] model conditioning: the peer's frame (style tokens, a held C major triad, drums
    masked, CFG 3/1/1)."""
    notes = [0] * 128
    for p in (60, 64, 67):
        notes[p] = 1
    raw = tk.make_conditioning(style=STYLE, notes=notes)
    return tk.encode_conditioning(raw)[None].repeat(streams, 1).to(device)


# ----------------------------------------------------------------------------------------------
# Settings: what one timed frame runs, named LM[+CODEC] (e.g. "graphs", "int8+fast-bf16").


class Frames:
    """One frame for every stream: the LM step with sampling, the codec decode step, the official
    int16 output stage and one copy of the audio to the host (FrameStream.step's computation,
    batched over N streams). ``parts`` holds the last frame's LM and codec ms."""

    def __init__(self, lm, codec, streams: int, device: torch.device):
        self.lm, self.codec, self.device, self.streams = lm, codec, device, streams
        self.state = codec.init_decode_state(streams, device)
        self.cond = conditioning(getattr(lm, "capacity", streams), device)
        self.parts: dict[str, float] = {}

    @torch.inference_mode()
    def __call__(self) -> np.ndarray:
        from openmrt.codec.output import official_output

        t0 = time.perf_counter()
        toks = self.lm.step(self.cond)[: self.streams].to(self.device, non_blocking=True)  # players pad
        _sync(self.device)  # part times only (the eager LM has host syncs of its own; players sync)
        t1 = time.perf_counter()
        audio = official_output(self.codec.decode_step(tk.from_unique(toks), self.state)).cpu().numpy()
        self.parts = {"lm": (t1 - t0) * 1e3, "codec": (time.perf_counter() - t1) * 1e3}
        return audio


# ==== The settings: openmrt.lm.generate.make_generator (eager / int8 / graphs), openmrt.engine.players,
# openmrt.codec.fast.prepare_decoder (f32 / bf16 / int8 CPU decode) and FrameStream(pipeline=True).


def lm_step(kind: str, model, streams: int, seed: int):
    """An object with ``step(cond [B, 144]) -> tokens [B, 12]`` for the LM setting ``kind``."""
    from openmrt.engine.players import Players
    from openmrt.errors import ConfigError
    from openmrt.lm.generate import make_generator

    kw = dict(temperature=1.3, top_k=40, seed=seed)
    if kind == "players":
        cuda = next(model.parameters()).device.type == "cuda"
        players = Players(model, capacity=streams, cuda_graph=cuda)
        for i in range(streams):
            players.join(seed=seed + i, temperature=1.3, top_k=40)
        return players  # on CUDA the first (warm-up) frame captures the one size it needs
    try:
        return make_generator(model, kind, batch_size=streams, **kw)
    except ConfigError as e:  # e.g. graphs on the CPU, int8 of a bf16 model
        raise Unavailable(str(e)) from None


def codec_step(kind: str, codec, streams: int):
    """A codec with ``init_decode_state(B, device)`` and ``decode_step(codes, state)``."""
    from openmrt.codec.fast import prepare_decoder
    from openmrt.errors import ConfigError

    if kind == "ref":
        return codec
    if next(codec.parameters()).device.type != "cpu":
        raise Unavailable("the fast codec decode is for the CPU")
    try:
        return prepare_decoder(codec, precision=kind.partition("-")[2] or "f32", batch=streams)
    except ConfigError as e:  # e.g. bf16 on a CPU without bf16 convolutions
        raise Unavailable(str(e)) from None


class Pipelined:
    """One stream through the engine's own FrameStream(pipeline=True): the codec decode of frame t
    on a worker thread while the LM steps frame t + 1 (one more frame of latency); ``threads`` per
    stage. Its LM is swapped for the setting's generator (same ``step(cond, forced=)`` API)."""

    def __init__(self, bundle, lm, codec, threads: int, seed: int):
        from openmrt.engine.frames import FrameStream

        self.fs = FrameStream(bundle, seed=seed, pipeline=True, threads=threads, decoder=codec)
        self.fs.lm = lm
        notes = [0] * 128
        for p in (60, 64, 67):
            notes[p] = 1
        self.raw = tk.make_conditioning(style=STYLE, notes=notes)
        self.latency_frames = self.fs.latency_frames
        self.parts: dict[str, float] = {}

    def __call__(self) -> np.ndarray:
        audio, _ = self.fs.step(self.raw)
        self.parts = {"lm": self.fs.lm_ms, "codec": self.fs.codec_ms}  # codec: the frame before's
        return audio


LM_SETTINGS = {"eager": "LM step in eager PyTorch", "int8": "int8 LM weights (CPU)",
               "graphs": "LM frame as one CUDA graph", "players": "Players batch (CUDA graphs on CUDA)"}
CODEC_SETTINGS = {"ref": "SpectroStream.decode_step", "fast": "prepacked oneDNN decode, f32 (CPU)",
                  "fast-bf16": "prepacked oneDNN decode, bf16 (CPU with AVX-512 BF16 / AMX)",
                  "fast-int8": "prepacked decode, int8 GEMMs for the largest layers (CPU)"}
PIPELINE = "pipeline"  # suffix: LM and codec as two stages on two threads (FrameStream), one stream
DEFAULT = {"cpu": ["eager"], "cuda": ["eager", "graphs"]}  # without --best
# --best: openmrt's fastest known (setting, LM dtype) candidates per device; the available ones run
# and the fastest measured is marked. CPU: bf16 LM ~2x f32 at 2 threads (docs/benchmarks.md, LM).
# Sequential candidates give both threads to each stage in turn; pipelined ones one thread per stage.
BEST = {"cpu": [("int8+fast-int8+pipeline", "float32"), ("int8+fast-bf16+pipeline", "float32"),
                ("int8+fast-bf16", "float32"), ("int8+fast-int8", "float32"), ("eager", "bfloat16")],
        "cuda": [("graphs", "bfloat16"), ("eager", "bfloat16")]}


def split_setting(setting: str) -> tuple[str, str, bool]:
    """LM[+CODEC][+pipeline] -> (lm, codec, pipelined)."""
    parts = setting.split("+")
    pipe = parts[-1] == PIPELINE
    if pipe:
        parts.pop()
    lm, codec = parts[0], (parts[1] if len(parts) > 1 else "ref")
    if lm not in LM_SETTINGS or codec not in CODEC_SETTINGS or len(parts) > 2:
        raise ValueError(f"setting {setting!r}: expected LM[+CODEC][+{PIPELINE}] with LM in {sorted(LM_SETTINGS)} "
                         f"and CODEC in {sorted(CODEC_SETTINGS)}")
    return lm, codec, pipe


def unavailable(setting: str, device: torch.device, streams: int = 1) -> str | None:
    """Why ``setting`` cannot run here (cheap checks, no model built), or None."""
    lm, codec, pipe = split_setting(setting)
    if lm == "graphs" and device.type != "cuda":
        return "CUDA graphs need --device cuda"
    if lm == "int8" and device.type != "cpu":
        return "the int8 LM is for the CPU"
    if codec != "ref" and device.type != "cpu":
        return "the fast codec decode is for the CPU"
    if pipe:
        if streams != 1 or lm == "players":
            return "the pipelined FrameStream plays one stream"
    return None


def make_frames(setting: str, bundle, streams: int, seed: int, threads: int = 1):
    lm, codec, pipe = split_setting(setting)
    device = next(bundle.codec.parameters()).device
    lm_gen, dec = lm_step(lm, bundle.lm, streams, seed), codec_step(codec, bundle.codec, streams)
    if pipe:
        return Pipelined(bundle, lm_gen, dec, max(1, threads // 2), seed)
    return Frames(lm_gen, dec, streams, device)


def graph_vs_eager(model, cond: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(eager tokens, graph tokens) [T, 12] of one stream with the same seeded (hashed) noise."""
    from openmrt.lm.graphs import graph_vs_eager as check

    if next(model.parameters()).device.type != "cuda":
        raise Unavailable("CUDA graphs need a CUDA device")
    return check(model, cond, seed=seed)
# ===============================================================================================


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_frames(step, device: torch.device, warmup: int, frames: int) -> dict:
    """Per-frame wall ms (synchronised) of ``frames`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    ms, parts = [], {}
    c0, w0 = os.times(), time.perf_counter()
    for _ in range(frames):
        t0 = time.perf_counter()
        step()
        _sync(device)
        ms.append((time.perf_counter() - t0) * 1e3)
        for k, v in getattr(step, "parts", {}).items():
            parts.setdefault(k, []).append(v)
    c1, wall = os.times(), time.perf_counter() - w0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"frames_ms": ms, "parts_ms": parts, "busy_cores": round(cpu / wall, 2)}


def worker(cfg: dict) -> dict:
    """One configuration in this (fresh) process: build, warm up, time. Returns a partial row."""
    torch.set_num_threads(cfg["threads"])
    device = resolve_device(cfg["device"])
    dtype = resolve_dtype(cfg["dtype"], device)
    t0 = time.perf_counter()
    bundle, weights = build_bundle(cfg["model"], device, dtype, cfg["weights"],
                                   Path(cfg["golden"]) if cfg.get("golden") else None, cfg["seed"])
    try:
        step = make_frames(cfg["setting"], bundle, cfg["streams"], cfg["seed"], cfg["threads"])
    except Unavailable as e:
        return {"unavailable": str(e)}
    setup_s = time.perf_counter() - t0
    la0 = loadavg()
    res = time_frames(step, device, cfg["warmup"], cfg["frames"])
    res.update(weights=weights, setup_s=round(setup_s, 2), loadavg_start=la0, loadavg_end=loadavg(),
               torch_threads=torch.get_num_threads(), latency_frames=getattr(step, "latency_frames", 1))
    if device.type == "cuda":
        res["cuda_max_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        res["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    return res


# ----------------------------------------------------------------------------------------------
# The parent: configurations in fresh processes, interleaved rounds, pooled rows


def _run(cmd: list[str], env: dict, timeout: float) -> str | None:
    """Runs a subprocess; None when it succeeded, else the error (its stderr's tail)."""
    try:
        p = run_group(cmd, timeout, env)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    if p.returncode:
        return f"exit {p.returncode}: " + (p.stderr.strip().splitlines() or ["(no stderr)"])[-1][-400:]
    return None


def _thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[v] = str(threads)
    return env


def run_openmrt(cfg: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg), "--out", str(out)]
        err = _run(cmd, _thread_env(cfg["threads"]), timeout)
        if err:
            return {"error": err}
        res = json.loads(out.read_text())
        return {"error": res["unavailable"], "unavailable": True} if "unavailable" in res else res


PEER_PART = {"system": "frame", "lm": "lm", "codec": "codec"}


def run_peer(cfg: dict, timeout: float) -> dict:
    """The official bench.py in its own venv; its JSON mapped onto our row fields."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        cmd = [cfg["python"], str(Path(cfg["dir"]) / "bench.py"), cfg["mode"], "--dtype", cfg["peer_dtype"],
               "--threads", str(cfg["threads"]), "--warmup", str(cfg["warmup"]), "--frames", str(cfg["frames"]),
               "--out", str(out)]
        err = _run(cmd, _thread_env(cfg["threads"]), timeout)
        if err:
            return {"error": err}
        r = json.loads(out.read_text())
    return {"frames_ms": r["frames_ms"], "parts_ms": {}, "busy_cores": r["threads"].get("avg_busy_cores"),
            "loadavg_start": r.get("loadavg_start"), "loadavg_end": r.get("loadavg_end"),
            "setup_s": round(sum(r.get("setup_s", {}).values()), 2), "weights": "seeded_golden",
            "fingerprint_ok": all(v.get("ok") for v in r.get("fingerprint", {}).values()),
            "versions": r.get("versions")}


def configurations(args, device: torch.device) -> list[dict]:
    dev = device.type
    if args.settings:
        pairs = [(s, args.dtype) for s in args.settings]
    elif args.best:
        pairs = [(s, args.dtype or d) for s, d in BEST[dev]]
    else:
        pairs = [(s, args.dtype) for s in DEFAULT[dev]]
    weights = args.weights
    if weights == "auto":
        weights = "seeded" if args.model == "mrt2_small" and golden_dir(args.golden) else "random"
    golden = golden_dir(args.golden)
    confs = []
    for setting, dt in pairs:
        for threads in args.threads:
            confs.append({"impl": "openmrt", "model": args.model, "device": str(device), "setting": setting,
                          "dtype": str(resolve_dtype(dt, device)).replace("torch.", ""), "streams": args.streams,
                          "threads": threads, "weights": weights, "golden": str(golden) if golden else None,
                          "seed": args.seed, "warmup": args.warmup})
    if args.peer:
        py = args.peer_python or _peer_python(Path(args.peer_dir))
        for spec in args.peer_settings:  # e.g. f32, bf16, f32x1 (x threads; default: openmrt's first)
            pdt, _, th = spec.partition("x")
            for mode in args.peer_parts:
                confs.append({"impl": "official", "model": args.model, "device": "cpu", "setting": "xla",
                              "dtype": {"f32": "float32", "bf16": "bfloat16"}[pdt], "peer_dtype": pdt, "mode": mode,
                              "streams": 1, "threads": int(th or args.threads[0]), "python": py,
                              "dir": args.peer_dir, "warmup": args.warmup})
    return confs


def _peer_python(peer_dir: Path) -> str:
    """The peer venv's python, made once by its setup.sh (a minute or two the first time)."""
    p = subprocess.run(["bash", str(peer_dir / "setup.sh")], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"realtime.py: the official peer's setup.sh failed: {p.stderr.strip()[-500:]}")
    return p.stdout.strip().splitlines()[-1]


def _disturbed(r: dict) -> bool:
    """The peer README's rule: a 1-minute load average at or above the core count at either end."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return any(la and la[0] >= cores for la in (r.get("loadavg_start"), r.get("loadavg_end")))


def pooled_rows(confs: list[dict], results: list[list[dict]]) -> list[dict]:
    """One row per configuration and part, its frames pooled over the rounds."""
    rows = []
    for cfg, rounds in zip(confs, results, strict=True):
        base = {k: cfg[k] for k in ("impl", "model", "device", "dtype", "setting", "streams", "threads")}
        base["part"] = PEER_PART[cfg["mode"]] if cfg["impl"] == "official" else "frame"
        ok = [r for r in rounds if "error" not in r]
        errors = [r["error"] for r in rounds if "error" in r]
        if not ok:
            rows.append({**base, "frames": 0, "error": errors[0] if errors else "not run",
                         **({"unavailable": True} if rounds and all(r.get("unavailable") for r in rounds) else {})})
            continue
        info = {"rounds": [{"frames": len(r["frames_ms"]), "p50_ms": round(float(np.median(r["frames_ms"])), 3),
                            "busy_cores": r.get("busy_cores"), "loadavg_start": r.get("loadavg_start"),
                            "loadavg_end": r.get("loadavg_end"), "disturbed": _disturbed(r)} for r in ok],
                "weights": ok[0].get("weights"), "setup_s": ok[0].get("setup_s"), "warmup": cfg["warmup"]}
        for k in ("latency_frames", "cuda_max_allocated_gib", "tf32", "fingerprint_ok", "versions"):
            if k in ok[0]:
                info[k] = ok[0][k]
        if errors:
            info["errors"] = errors
        info["disturbed_rounds"] = sum(x["disturbed"] for x in info["rounds"])
        ms = np.concatenate([r["frames_ms"] for r in ok])
        rows.append({**base, **frame_stats(ms), **info, "frames_ms": [round(float(x), 3) for x in ms]})
        for part in ok[0]["parts_ms"]:
            pms = np.concatenate([r["parts_ms"][part] for r in ok])
            rows.append({**base, "part": part, **frame_stats(pms), "weights": info["weights"],
                         "frames_ms": [round(float(x), 3) for x in pms]})
    for impl in ("openmrt", "official"):  # the fastest whole frame of each implementation
        frames = [r for r in rows if r["impl"] == impl and r["part"] == "frame" and r.get("frames")]
        if frames:
            min(frames, key=lambda r: r["p50_ms"])["fastest"] = True
    return rows


def comparison(rows: list[dict]) -> dict | None:
    best = {r["impl"]: r for r in rows if r.get("fastest")}
    if len(best) < 2:
        return None
    o, p = best["openmrt"], best["official"]
    return {"openmrt": f"{o['setting']} {o['dtype']} x{o['threads']}", "official": f"{p['dtype']} x{p['threads']}",
            "speedup_p50": round(p["p50_ms"] / o["p50_ms"], 2), "speedup_p99": round(p["p99_ms"] / o["p99_ms"], 2)}


def histogram(rows: list[dict], path: Path) -> Path | None:
    """Per-frame time histograms of the whole-frame rows, the 40 ms budget marked."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    frames = [r for r in rows if r["part"] == "frame" and r.get("frames")]
    if not frames:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    hi = max(max(r["frames_ms"]) for r in frames)
    lo = min(min(r["frames_ms"]) for r in frames)
    bins = np.geomspace(max(lo * 0.9, 1e-3), hi * 1.1, 80)
    for r in frames:
        ax.hist(r["frames_ms"], bins=bins, histtype="step", linewidth=1.5,
                label=f"{r['impl']} {r['setting']} {r['dtype']} x{r['threads']} N={r['streams']}: "
                      f"p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms")
    ax.axvline(FRAME_MS, color="k", linestyle="--", linewidth=1, label="40 ms (real time)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("ms per frame (LM step + codec decode step)")
    ax.set_ylabel("frames")
    ax.set_title(f"{frames[0]['model']} on {frames[0]['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--model", choices=MODELS, default="tiny")
    ap.add_argument("--dtype", default=None, help="LM compute dtype (default: auto = bf16 on CUDA, f32 on CPU; "
                                                  "with --best the table's)")
    ap.add_argument("--streams", type=int, default=1, help="independent players in one batch (default 1)")
    ap.add_argument("--frames", type=int, default=500, help="timed frames per configuration, over all rounds")
    ap.add_argument("--warmup", type=int, default=20, help="untimed frames per process (after building)")
    ap.add_argument("--best", action="store_true", help="openmrt's fastest known setting on this device")
    ap.add_argument("--peer", choices=["official"], help="also run the official JAX code (mrt2_small, CPU)")
    ap.add_argument("--out", required=True, help="JSON result file (a PNG histogram goes beside it)")
    ap.add_argument("--settings", type=lambda s: s.split(","),
                    help=f"comma list of LM[+CODEC]: LM in {sorted(LM_SETTINGS)}, CODEC in {sorted(CODEC_SETTINGS)} "
                         "(default: eager on the CPU, eager,graphs on CUDA)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="compute threads per process, one configuration each (default: free cores now)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 1; 2 with --peer)")
    ap.add_argument("--weights", choices=["auto", "seeded", "random"], default="auto")
    ap.add_argument("--golden", default=None, help="shared/golden (default: $OPENMRT_GOLDEN or ../shared/golden)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-dir", default=None, help="default: shared/peers/official_jax")
    ap.add_argument("--peer-python", default=None, help="the peer venv's python (default: from its setup.sh)")
    ap.add_argument("--peer-settings", nargs="+", default=["f32"],
                    help="peer LM dtype[xTHREADS]: f32 | bf16, e.g. f32 bf16 f32x1 (default f32 at --threads)")
    ap.add_argument("--peer-parts", nargs="+", choices=list(PEER_PART), default=["system"],
                    help="peer modes: system (whole frame), lm, codec")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return args
    for setting in args.settings or []:
        try:
            split_setting(setting)
        except ValueError as e:
            ap.error(str(e))
    if args.peer and (args.model != "mrt2_small" or not args.device.startswith("cpu")):
        ap.error("--peer official runs the official code's mrt2_small on the CPU: use --model mrt2_small --device cpu")
    if args.streams < 1 or args.frames < 1 or args.warmup < 0:
        ap.error("--streams and --frames must be >= 1, --warmup >= 0")
    if args.peer:
        args.peer_dir = args.peer_dir or str(shared_dir("peers/official_jax") or "")
        if not (Path(args.peer_dir) / "bench.py").is_file():
            ap.error("the official peer (shared/peers/official_jax) is not found: pass --peer-dir")
    args.threads = args.threads or [free_cores()]
    args.rounds = args.rounds or (2 if args.peer else 1)
    return args


def document(args, info: dict, confs: list[dict], results: list[list[dict]], t_start: float, done: bool) -> dict:
    rows = pooled_rows(confs, results)
    doc = {"benchmark": "realtime", "complete": done, "machine": {**info, "load_average_at_end": loadavg()},
           "wall_s": round(time.perf_counter() - t_start, 1),
           "args": {k: v for k, v in vars(args).items() if k not in ("worker",)},
           "settings": {"lm": LM_SETTINGS, "codec": CODEC_SETTINGS, "pipeline": PIPELINE}, "rows": rows}
    if cmp := comparison(rows):
        doc["comparison"] = cmp
    return doc


def _write(doc: dict, out: Path) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(out)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        res = worker(json.loads(args.worker))
        Path(args.out).write_text(json.dumps(res))
        return None
    device = resolve_device(args.device)
    confs = configurations(args, device)
    per_round = math.ceil(args.frames / args.rounds)
    results: list[list[dict]] = [[] for _ in confs]
    info = machine()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    for rnd in range(args.rounds):
        order = list(range(len(confs)))
        if rnd % 2:
            order.reverse()
        for i in order:
            cfg = {**confs[i], "frames": per_round}
            why = unavailable(cfg["setting"], device, cfg["streams"]) if cfg["impl"] == "openmrt" else None
            if why:
                results[i].append({"error": why, "unavailable": True})
                continue
            print(f"round {rnd + 1}/{args.rounds}: {cfg['impl']} {cfg['setting']} {cfg['dtype']} "
                  f"x{cfg['threads']} {cfg.get('mode', '')}", file=sys.stderr, flush=True)
            run = run_peer if cfg["impl"] == "official" else run_openmrt
            r = run(cfg, args.timeout)
            if "error" in r:
                print(f"  error: {r['error']}", file=sys.stderr)
            results[i].append(r)
            _write(document(args, info, confs, results, t_start, False), out)  # what is done so far
    doc = document(args, info, confs, results, t_start, True)
    rows = doc["rows"]
    png = histogram(rows, out.with_suffix(".png"))
    doc["histogram"] = png.name if png else None
    _write(doc, out)
    for r in rows:
        if r.get("frames"):
            print(f"{r['impl']:8s} {r['part']:6s} {r['setting']:8s} {r['dtype']:8s} x{r['threads']} N={r['streams']}: "
                  f"p50 {r['p50_ms']:8.2f}  p95 {r['p95_ms']:8.2f}  p99 {r['p99_ms']:8.2f}  max {r['max_ms']:8.2f} ms"
                  f"  rtf {r['rtf']:.2f}{'  *fastest' if r.get('fastest') else ''}")
        else:
            print(f"{r['impl']:8s} {r['part']:6s} {r['setting']:8s} {r['dtype']:8s}: {r.get('error')}")
    if cmp := doc.get("comparison"):
        print(f"speed-up of openmrt over official (p50): {cmp['speedup_p50']}x")
    print(f"wrote {out}" + (f" and {png}" if png else ""))
    return doc


if __name__ == "__main__":
    main()

"""SpectroStream speed: streaming decode ms per 40 ms frame and encode throughput, as JSON.

    python3 benchmarks/codec.py [--threads 1 2] [--frames 100] [--impls reference fast-f32 ...] [--out results.json]

For each width (full = the official codec, narrow = ¼ channels) and device (CPU, plus CUDA when
available) it reports:
* ``decode_step_ms``: p50/p95/p99 of one ``decode_step`` (12 codes in, 1920 stereo samples out),
  after a warm-up, and the real-time factor 40 ms / frame time (higher is better; ≥ 1 keeps up);
* ``encode_step_ms``: the same for ``encode_step`` (1920 samples in, 12 codes out);
* ``encode_x_realtime``: whole-sequence ``encode`` of a 10 s clip, audio seconds per wall second.
Random weights: speed does not depend on the values. ``--impls`` picks the decode step:
``reference`` (SpectroStream.decode_step), ``fast-f32`` / ``fast-bf16`` / ``fast-int8``
(openmrt.codec.fast.prepare_decoder; bf16 only where the CPU has it). ``--decode-only`` skips the
encoder. To time this machine as an AVX2-only CPU, run with ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import os  # noqa: E402

from common import machine  # noqa: E402

from openmrt.codec import FRAME_SAMPLES, SpectroStream  # noqa: E402
from openmrt.codec.fast import bf16_supported, prepare_decoder  # noqa: E402
from openmrt.config import codec_config  # noqa: E402

FRAME_MS = 1000 * FRAME_SAMPLES / 48000  # 40 ms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _stats(ms: list[float]) -> dict:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50": round(p50, 3),
        "p95": round(p95, 3),
        "p99": round(p99, 3),
        "mean": round(float(np.mean(ms)), 3),
        "rtf_p50": round(FRAME_MS / p50, 2),
        "rtf_p99": round(FRAME_MS / p99, 2),
        "n": len(ms),
    }


def _time_steps(step, inputs: list, device: torch.device, warmup: int) -> list[float]:
    ms = []
    for i, x in enumerate(inputs):
        _sync(device)
        t = time.perf_counter()
        step(x)
        _sync(device)
        if i >= warmup:
            ms.append(1000 * (time.perf_counter() - t))
    return ms


@torch.inference_mode()
def bench(preset: str, device: torch.device, frames: int, warmup: int, impls: list[str], encode: bool) -> dict:
    torch.manual_seed(0)
    codec = SpectroStream(codec_config(preset)).eval().to(device)
    codes = torch.randint(0, 1024, (frames + warmup, 1, 12), device=device)
    out = {"preset": preset, "width": codec.config.width, "params": sum(p.numel() for p in codec.parameters())}
    decoders = {}
    for impl in impls:
        if impl == "reference":
            decoders[impl] = codec
        elif device.type == "cpu" and not (impl == "fast-bf16" and not bf16_supported()):
            decoders[impl] = prepare_decoder(codec, impl.removeprefix("fast-"))
    states = {k: d.init_decode_state(1, device=device) for k, d in decoders.items()}
    ms = {k: [] for k in decoders}
    for i, c in enumerate(codes):  # implementations take turns frame by frame: a shared machine's load hits all alike
        for k, d in decoders.items():
            _sync(device)
            t = time.perf_counter()
            d.decode_step(c, states[k])
            _sync(device)
            if i >= warmup:
                ms[k].append(1000 * (time.perf_counter() - t))
    for k, v in ms.items():
        out["decode_step_ms" if k == "reference" else f"decode_step_ms_{k}"] = _stats(v)
    if not encode:
        return out

    blocks = 0.1 * torch.randn(frames + warmup, 1, FRAME_SAMPLES, 2, device=device)
    estate = codec.init_encode_state(1, device=device)
    enc = _time_steps(lambda b: codec.encode_step(b, estate, 12), list(blocks), device, warmup)

    clip = 0.1 * torch.randn(1, 10 * 48000, 2, device=device)
    codec.encode(clip[:, :48000], 12)  # warm-up
    _sync(device)
    t = time.perf_counter()
    codec.encode(clip, 12)
    _sync(device)
    out["encode_step_ms"] = _stats(enc)
    out["encode_x_realtime"] = round(10.0 / (time.perf_counter() - t), 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to try")
    ap.add_argument("--frames", type=int, default=100, help="timed frames per narrow run")
    ap.add_argument("--full-frames", type=int, default=50, help="timed frames per full-width CPU run")
    ap.add_argument("--impls", nargs="+", default=["reference", "fast-f32", "fast-bf16"],
                    help="decode step implementations: reference fast-f32 fast-bf16 fast-int8")
    ap.add_argument("--decode-only", action="store_true", help="skip the encoder timings")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--presets", nargs="+", default=["narrow", "spectrostream"])
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    isa = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
           if k in os.environ}
    results = {"machine": {**machine(), "isa_caps": isa}, "frame_ms": FRAME_MS, "runs": []}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for preset in args.presets:
            n = args.full_frames if preset == "spectrostream" else args.frames
            run = bench(preset, torch.device("cpu"), n, args.warmup, args.impls, not args.decode_only)
            results["runs"].append({"device": "cpu", "threads": threads, **run})
            print(json.dumps(results["runs"][-1]), file=sys.stderr)
    if torch.cuda.is_available():
        for preset in args.presets:
            run = bench(preset, torch.device("cuda"), args.frames, args.warmup, args.impls, not args.decode_only)
            results["runs"].append({"device": "cuda", **run})
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return results


if __name__ == "__main__":
    main()

"""v1 speed: one 2 s chunk = the encoder over 10 s of context + 6 style tokens, then the 800-step decode (50 frames
x 16 levels) with classifier-free guidance (2 rows), as the engine's v1 mode runs it (openmrt/lm_v1).

    python3 benchmarks/v1_chunk.py [--sizes tiny base] [--chunks 3] [--threads 1] --out FILE

Random weights (speed does not depend on their values); the fed-back tokens are forced to codec tokens so every
chunk runs all 800 steps (random weights may end a chunk early). Per chunk: the wall time, split into encoder +
decode; reported as ms per 40 ms frame (chunk / 50) with p50/p95/p99 over the chunks, and the real-time factor
2 s / chunk time (higher is better; >= 1 keeps up). On a GPU it adds CUDA rows: eager float32, then the steps
replayed as CUDA graphs (ChunkDecoder) in float32 and bfloat16.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, summarize, write  # noqa: E402

from openmrt.lm_v1 import tokens as vt  # noqa: E402
from openmrt.lm_v1.config import v1_config  # noqa: E402
from openmrt.lm_v1.generate import ChunkDecoder, V1Sampling  # noqa: E402
from openmrt.lm_v1.model import V1LM  # noqa: E402

CHUNK_FRAMES, CHUNK_SECONDS = 50, 2.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(size: str, device: torch.device, dtype: torch.dtype, chunks: int, graphs: bool = False) -> dict:
    torch.manual_seed(0)
    model = V1LM(v1_config(size)).to(device=device, dtype=dtype).eval()
    g = torch.Generator(device="cpu").manual_seed(0)
    context = torch.randint(0, vt.CODES, (vt.CONTEXT_FRAMES, vt.CONTEXT_LEVELS), generator=g)
    style = torch.randint(0, vt.CODES, (vt.STYLE_TOKENS,), generator=g)
    enc = vt.encoder_ids(context, style).to(device)  # [2, 1006]: conditioned, unconditioned
    steps = model.cfg.steps
    level = torch.arange(steps) % 16
    forced = (vt.CODEC_OFFSET + vt.CODES * level + torch.randint(0, vt.CODES, (steps,), generator=g))
    forced = forced[None].expand(2, -1).to(device)
    sampling = V1Sampling()
    gen = torch.Generator(device=device).manual_seed(0)
    dec = ChunkDecoder(model, 2, cuda_graph=graphs)
    totals, encoders = [], []
    for i in range(chunks + 1):  # the first chunk warms up (allocations, kernels)
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            model.begin(dec.state, enc)
        sync(device)
        t1 = time.perf_counter()
        dec.run(enc, sampling, forced=forced, generator=gen)  # the first run also captures the graphs
        sync(device)
        t2 = time.perf_counter()
        if i:  # run() runs the encoder itself: the chunk is t1..t2, t0..t1 times the encoder alone
            totals.append((t2 - t1) * 1e3)
            encoders.append((t1 - t0) * 1e3)
    per_frame = [t / CHUNK_FRAMES for t in totals]
    s = summarize(per_frame)
    return {"size": size, "device": device.type, "dtype": str(dtype).removeprefix("torch."), "graphs": graphs,
            "chunks": chunks,
            "chunk_s": [round(t / 1e3, 2) for t in totals], "encoder_ms": [round(t, 1) for t in encoders],
            "rtf_chunk": round(CHUNK_SECONDS * 1e3 / (sum(totals) / len(totals)), 3), **s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="benchmarks/results/v1_chunk.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [(torch.device("cpu"), torch.float32, False)]
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        runs += [(cuda, torch.float32, False), (cuda, torch.float32, True), (cuda, torch.bfloat16, True)]
    rows = []
    for device, dtype, graphs in runs:
        for size in args.sizes:
            r = bench(size, device, dtype, args.chunks, graphs)
            mode = "graphs" if graphs else "eager"
            print(f"{r['device']:4s} {r['size']:5s} {r['dtype']:8s} {mode:6s} chunk {r['chunk_s']} s (encoder "
                  f"{r['encoder_ms']} ms)  per frame p50 {r['p50_ms']:.1f} ms  RTF {r['rtf_chunk']}", flush=True)
            rows.append(r)
    write({"benchmark": "v1_chunk", "machine": machine(), "results": rows}, args.out)


if __name__ == "__main__":
    main()

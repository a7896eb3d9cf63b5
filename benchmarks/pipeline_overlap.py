"""Do the LM and the codec overlap on two threads? Frame period, sequential vs pipelined, as JSON.

    python3 benchmarks/pipeline_overlap.py [--lm demo] [--codec spectrostream] [--precision f32] [--frames 60]

Builds a random-weight bundle, wraps its codec with ``openmrt.codec.fast.prepare_decoder`` and
steps ``FrameStream`` sequentially (one thread, period ≈ LM + codec) and pipelined (LM on the
calling thread, codec on a worker, one torch thread each: period ≈ max(LM, codec) if the two
Python threads really run at once; torch releases the GIL inside its ops). Rounds alternate
between the two settings so that a shared machine's load hits both alike. ``cpu_over_wall`` (process
CPU time / wall time) above 1 shows the two threads computing at the same time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from openmrt import tokens as tk  # noqa: E402
from openmrt.codec.fast import prepare_decoder  # noqa: E402
from openmrt.engine.bundle import random_bundle  # noqa: E402
from openmrt.engine.frames import FrameStream  # noqa: E402

COND = tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1)


def _pct(ms: list[float]) -> dict:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "p99_ms": round(p99, 2), "n": len(ms)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", default="demo")
    ap.add_argument("--codec", default="spectrostream")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--frames", type=int, default=60, help="timed frames per setting")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline_overlap.json")
    args = ap.parse_args(argv)
    bundle = random_bundle(args.lm, args.codec, seed=0)
    dec = prepare_decoder(bundle.codec, args.precision)
    streams = {name: FrameStream(bundle, seed=0, pipeline=name == "pipelined", threads=1, decoder=dec)
               for name in ("sequential", "pipelined")}
    period = {k: [] for k in streams}
    lm_ms = {k: [] for k in streams}
    codec_ms = {k: [] for k in streams}
    cpu = {k: 0.0 for k in streams}  # process CPU seconds over wall seconds > 1: the threads ran at once
    wall = {k: 0.0 for k in streams}
    per_round = args.frames // args.rounds
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, s in streams.items():
            torch.set_num_threads(1)
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.step(COND)
                if r:
                    period[name].append((time.perf_counter() - t0) * 1e3)
                    lm_ms[name].append(s.lm_ms)
                    codec_ms[name].append(s.codec_ms)
            if r:
                cpu[name] += time.process_time() - c0
                wall[name] += time.perf_counter() - w0
    for s in streams.values():
        s.close()
    result = {"machine": machine(), "lm": args.lm, "codec": args.codec, "precision": args.precision,
              "threads_per_stage": 1,
              "rows": [{"setting": k, "latency_frames": streams[k].latency_frames, "period": _pct(period[k]),
                        "lm": _pct(lm_ms[k]), "codec": _pct(codec_ms[k]),
                        "cpu_over_wall": round(cpu[k] / wall[k], 3)} for k in streams]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["rows"]:
        print(json.dumps(row), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

"""LM frame time: temporal step + 12 depth steps + sampling, per 40 ms frame.

    python benchmarks/lm_step.py [--sizes tiny demo mrt2_small] [--dtypes float32 bfloat16 int8 compiled]
                                 [--frames 100] [--out benchmarks/results/lm_step.json]

Random weights (speed does not depend on their values). Reports p50/p95/p99 ms per frame after
warm-up and the real-time factor (40 ms / frame time, higher is better).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, summarize, timed, write  # noqa: E402

from openmrt import tokens as tk  # noqa: E402
from openmrt.config import lm_config  # noqa: E402
from openmrt.lm.generate import LMGenerator  # noqa: E402
from openmrt.lm.model import Depthformer  # noqa: E402


def bench(size: str, dt: str, device: torch.device, frames: int, warmup: int) -> dict:
    torch.manual_seed(0)
    int8, compiled = dt == "int8", dt == "compiled"  # of a float32 model (CPU only)
    dtype = torch.float32 if int8 or compiled else getattr(torch, dt)
    model = Depthformer(lm_config(size)).to(device=device, dtype=dtype).eval()
    gen = LMGenerator(model, temperature=1.3, top_k=40, int8=int8, compiled=compiled)
    if compiled and not gen.compiled:
        raise SystemExit("the compiled step is not available here (see the message above)")
    cond = tk.encode_conditioning(tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1))[None]
    for _ in range(warmup):
        gen.step(cond)
    ms = [timed(lambda: gen.step(cond), device) for _ in range(frames)]
    return {"size": size, "dtype": dt, "device": device.type, **summarize(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "demo", "mrt2_small"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8"],
                    help="float32, bfloat16, int8 (int8 weights, CPU only), compiled (float32 + TorchInductor, CPU)")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="benchmarks/results/lm_step.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for size in args.sizes:
            for dt in args.dtypes:
                if dt in ("int8", "compiled") and device.type != "cpu":
                    continue
                r = bench(size, dt, device, args.frames, args.warmup)
                print(f"{r['device']:4s} {r['size']:10s} {r['dtype']:8s} p50 {r['p50_ms']:8.2f}  "
                      f"p95 {r['p95_ms']:8.2f}  "
                      f"p99 {r['p99_ms']:8.2f} ms/frame  RTF {r['rtf_p50']}")
                rows.append(r)
    write({"benchmark": "lm_step", "machine": machine(), "results": rows}, args.out)


if __name__ == "__main__":
    main()

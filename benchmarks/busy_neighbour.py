"""Offline generation speed with and without a busy neighbour process, as JSON.

    python3 benchmarks/busy_neighbour.py [--model random:tiny] [--seconds 8] [--out FILE.json]

Renders ``--seconds`` of audio the way ``openmrt generate`` does (``FrameStream`` + ``render``)
and reports frames per second, first on the machine as it is ("idle") and then with one
``python -c "while True: pass"`` running beside it ("busy"). Settings:

* ``all_cores_before``: torch's default intra-op threads (every core), sequential: the old behaviour;
* ``sequential``: one stage, intra-op threads = free cores // 2 (at least 1);
* ``default``: what ``openmrt generate`` does now (the bundle's ``Speed``: pipelined when two cores are
  free, one thread per stage).

The acceptance (issue 14): busy keeps ≥ 50 % of idle frames per second. The machine is shared
with other jobs: the load average before each run is in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from openmrt import tokens as tk  # noqa: E402
from openmrt.engine.bundle import load_bundle  # noqa: E402
from openmrt.engine.frames import FRAME, FrameStream  # noqa: E402
from openmrt.engine.offline import render  # noqa: E402

COND = tk.make_conditioning(style=list(range(12)), notes=[0] * 128, drums=1)
ALL_CORES = torch.get_num_threads()  # torch's default before anything sets it


def _fps(bundle, seconds: float, setting: str) -> dict:
    kwargs = {"all_cores_before": {"threads": ALL_CORES, "pipeline": False}, "sequential": {"pipeline": False},
              "default": {}}[setting]
    stream = FrameStream(bundle, seed=0, **kwargs)
    render(stream, 4 * FRAME, lambda t: COND)  # warm-up
    stream.reset(0)
    n = int(seconds * 48000)
    t0 = time.perf_counter()
    render(stream, n, lambda t: COND)
    wall = time.perf_counter() - t0
    stream.close()
    frames = -(-n // FRAME) + stream.latency_frames
    return {"setting": setting, "threads_per_stage": stream.threads, "pipeline": stream.pipeline,
            "frames": frames, "wall_s": round(wall, 3), "fps": round(frames / wall, 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random:tiny")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--settings", nargs="+", default=["all_cores_before", "sequential", "default"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "busy_neighbour.json")
    args = ap.parse_args(argv)
    bundle = load_bundle(args.model, seed=0)
    result = {"machine": machine(), "model": args.model, "seconds": args.seconds, "rows": []}
    for neighbour in ("idle", "busy"):
        proc = None
        if neighbour == "busy":
            proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for setting in args.settings:
                load = os.getloadavg()[0]
                row = {"neighbour": neighbour, "load_average": load, **_fps(bundle, args.seconds, setting)}
                result["rows"].append(row)
                print(json.dumps(row), file=sys.stderr)
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    idle = {r["setting"]: r["fps"] for r in result["rows"] if r["neighbour"] == "idle"}
    result["busy_over_idle"] = {r["setting"]: round(r["fps"] / idle[r["setting"]], 3)
                                for r in result["rows"] if r["neighbour"] == "busy"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["busy_over_idle"]), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

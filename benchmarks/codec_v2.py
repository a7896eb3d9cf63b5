"""Demo codec v2 speed: streaming decode (decoder + RTPGHI phase head + inverse STFT) ms per 40 ms frame.

    python benchmarks/codec_v2.py --codec RUN/codec_v2.safetensors --data HELDOUT_SHARDS [--threads 1]

The phase head's cost depends on the spectra (how many bins lie within its tolerance of the peak), so it
is timed on real music: the codes of held-out shards' audio, decoded frame by frame as a live stream
would. Reports p50/p95/p99 of the whole step and of its three parts, with the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, summarize, write  # noqa: E402

from openmrt.codec.rtpghi import rtpghi_step, synthesis_step  # noqa: E402
from openmrt.codec.v2 import load_codec_v2  # noqa: E402
from openmrt.train.codec2 import ShardAudio  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codec", required=True)
    ap.add_argument("--data", required=True, help="shard folder whose audio is encoded and streamed back")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio per example")
    ap.add_argument("--examples", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "codec_v2_decode.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_codec_v2(args.codec)
    data = ShardAudio([args.data])
    frames = int(args.seconds * 25)
    total, parts = [], {"decoder": [], "phase": [], "synthesis": []}
    load0 = os.getloadavg()
    with torch.inference_mode():
        for i in range(min(args.examples, len(data.audio))):
            a = torch.from_numpy(data.audio[i][:, : frames * 1920].T.astype(np.float32) / 32768)[None]
            codes = model.encode(a, model.config.token_levels)
            state = model.init_decode_state(1)
            for k in range(codes.shape[1]):  # CodecV2.decode_latents_step's three parts, each timed
                t0 = time.perf_counter()
                mag = model.decoder.step(model.quantizer.decode(codes[:, k])[:, None], state.decoder)["mag"]
                mag = model._limit(mag)
                t1 = time.perf_counter()
                phase = rtpghi_step(mag.mean(1), state.phase, model.tol).float()
                t2 = time.perf_counter()
                synthesis_step(model._spectrum(mag, phase), state.synth)
                t3 = time.perf_counter()
                if k >= 5:  # warm-up
                    total.append((t3 - t0) * 1e3)
                    for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                        parts[name].append(dt * 1e3)
    res = {"machine": {**machine(), "load_average_at_end": os.getloadavg(), "load_average_before": load0},
           "codec": args.codec, "threads": args.threads, "decode_step": summarize(total),
           "parts": {k: summarize(v) for k, v in parts.items()}}
    write(res, args.out)
    return res


if __name__ == "__main__":
    main()

"""Speed of the compose -> render -> label pipeline per SoundFont, in seconds of audio per
CPU-second (process time, so other load on the machine does not count), SoundFont loading
reported apart. One process.

    python benchmarks/data_render.py --pieces 10   # -> benchmarks/results/data_render.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from openmrt.data.compose import compose, style_names  # noqa: E402
from openmrt.data.labels import midi_labels, n_frames  # noqa: E402
from openmrt.data.render import Renderer, available_soundfonts, draw_augment  # noqa: E402
from openmrt.frame import FRAME_SAMPLES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pieces", type=int, default=10, help="pieces per SoundFont (styles in rotation)")
    ap.add_argument("--out", default="benchmarks/results/data_render.json")
    args = ap.parse_args()
    styles = style_names()
    r = Renderer()
    out = {}
    for sf in available_soundfonts():
        t = time.process_time()
        r._sfont(sf)  # load once, timed apart
        load = time.process_time() - t
        audio = comp = rend = lab = 0.0
        for k in range(args.pieces):
            t0 = time.process_time()
            piece = compose(styles[k % len(styles)], 500 + k, 40)
            t1 = time.process_time()
            frames = n_frames(piece.duration)
            r.render(piece.midi, frames * FRAME_SAMPLES, sf, draw_augment(k))
            t2 = time.process_time()
            midi_labels(piece.midi, frames)
            t3 = time.process_time()
            audio += frames / 25
            comp, rend, lab = comp + t1 - t0, rend + t2 - t1, lab + t3 - t2
        total = comp + rend + lab
        out[sf.rsplit("/", 1)[-1]] = {"load_cpu_s": round(load, 2), "audio_s": round(audio, 1),
                                      "compose_cpu_s": round(comp, 2), "render_cpu_s": round(rend, 2),
                                      "labels_cpu_s": round(lab, 2), "audio_s_per_cpu_s": round(audio / total, 1)}
        print(sf, out[sf.rsplit("/", 1)[-1]], flush=True)
    print(json.dumps(out, indent=1))
    Path(args.out).write_text(json.dumps({"machine": machine(), "soundfonts": out}, indent=1))


if __name__ == "__main__":
    main()

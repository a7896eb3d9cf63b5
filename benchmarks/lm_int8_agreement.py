"""int8 LM against the float golden: greedy agreement, logit error, and LM frame time.

    python benchmarks/lm_int8_agreement.py [--golden ../shared/golden] [--frames 50] [--threads 1]
                                           [--out benchmarks/results/lm_int8_agreement.json]

mrt2_small with the seeded golden weights (shared/golden/seeded), teacher-forced with the golden
tokens of ``lm_long48_greedy.npz`` (48 frames through window eviction): at every frame and level
the int8 model's greedy choice is compared with the golden token (576 decisions), and its
soft-capped logits with the golden ones (levels 0-1 in full, every level's maximum). The same for
float32 and bfloat16 as references, and the LM frame time of each setting (1 thread by default,
p50/p95/p99 ms per 40 ms frame; the shared machine's load is recorded: figures are noisy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from common import machine, summarize, write  # noqa: E402
from seeded import LM_SEED, rebuild  # noqa: E402

from openmrt import tokens as tk  # noqa: E402
from openmrt.config import lm_config  # noqa: E402
from openmrt.lm.convert import load_official  # noqa: E402
from openmrt.lm.generate import LMGenerator  # noqa: E402
from openmrt.lm.model import Depthformer  # noqa: E402
from openmrt.lm.packed import linears, pack  # noqa: E402
from openmrt.lm.quant import Int8Dense, has_vnni  # noqa: E402

STARTS = np.array([tk.level_slice(q).start for q in range(12)])


def agreement(gen: LMGenerator, d) -> dict:
    """Teacher-forced greedy decisions and logit errors over the golden frames."""
    agree, err01, err_max, first_bad, finite = 0, 0.0, 0.0, None, True
    frames = d["tokens"].shape[0]
    for t in range(frames):
        tr: dict = {}
        gen.step(torch.as_tensor(d["cond_tokens"][t : t + 1]), forced=torch.as_tensor(d["tokens"][t : t + 1]), trace=tr)
        capped = torch.stack(tr["logits"], 2)[0, 0].float().numpy()  # [12, 1024]
        finite &= bool(np.isfinite(capped).all() and np.isfinite(tr["temporal_out"].numpy()).all())
        ok = capped.argmax(-1) + STARTS == d["tokens"][t]
        agree += int(ok.sum())
        if first_bad is None and not ok.all():
            first_bad = t
        err01 = max(err01, float(np.abs(capped[:2] - d["capped_valid_levels01"][t]).max()))
        err_max = max(err_max, float(np.abs(capped.max(-1) - d["capped_valid_max"][t]).max()))
    return {"greedy_agreement": agree / (frames * 12), "decisions": frames * 12, "agreeing": agree,
            "first_frame_with_a_miss": first_bad, "max_abs_logit_err_levels01": round(err01, 5),
            "max_abs_err_of_level_max": round(err_max, 5), "all_finite": finite}


def frame_times(gen: LMGenerator, d, frames: int, warmup: int = 5) -> dict:
    cond = torch.as_tensor(d["cond_tokens"][:1])
    for _ in range(warmup):
        gen.step(cond)
    ms = []
    for _ in range(frames):
        t0 = time.perf_counter()
        gen.step(cond)
        ms.append((time.perf_counter() - t0) * 1e3)
    return summarize(ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", default=str(ROOT.parent / "shared" / "golden"))
    ap.add_argument("--frames", type=int, default=50, help="timed frames per setting")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/lm_int8_agreement.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    golden = Path(args.golden)
    d = np.load(golden / "seeded" / "lm_long48_greedy.npz")
    f32 = Depthformer(lm_config("mrt2_small"))
    load_official(f32, rebuild(golden / "seeded" / "lm_param_keys.txt", LM_SEED))
    f32.eval()
    bf16 = Depthformer(lm_config("mrt2_small"))
    bf16.load_state_dict(f32.state_dict())
    bf16 = bf16.to(torch.bfloat16).eval()
    int8 = pack(f32, int8=True)
    settings = [("float32", f32, None), ("bfloat16", bf16, None), ("int8", f32, int8)]
    if has_vnni():  # also what a CPU without VNNI gets: 7-bit activations
        int8_7 = pack(f32, int8=True)
        for lin in linears(int8_7):
            if isinstance(lin, Int8Dense):
                lin.reduce_range = True
        settings.append(("int8_7bit_activations", f32, int8_7))
    rows = []
    for name, model, packed in settings:
        gen = LMGenerator(model, temperature=0.0, packed=packed)
        row = {"setting": name, **agreement(gen, d)}
        gen.reset()
        row["time"] = frame_times(gen, d, args.frames)
        print(f"{name:9s} greedy {row['agreeing']}/{row['decisions']}  "
              f"logit err L0-1 {row['max_abs_logit_err_levels01']}  finite {row['all_finite']}  "
              f"p50 {row['time']['p50_ms']} p99 {row['time']['p99_ms']} ms/frame",
              flush=True)
        rows.append(row)
    write({"benchmark": "lm_int8_agreement", "model": "mrt2_small (seeded golden weights)", "cpu_vnni": has_vnni(),
           "golden": "seeded/lm_long48_greedy.npz, teacher-forced", "machine": machine(), "rows": rows}, args.out)


if __name__ == "__main__":
    main()

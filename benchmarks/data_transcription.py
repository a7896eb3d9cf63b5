"""How well do transcribed labels match the truth? basic-pitch and the drum detector on our own
rendered music, where the MIDI is known. Offline, once (not in CI); about 10 minutes on one core.

For every style: ``--fit`` pieces (fit the drum detector, choose the re-onset merge gap) and
``--clips`` held-out pieces (report). Each piece is composed, rendered with a SoundFont drawn as in
``openmrt data compose``, and a 10 s clip is cut from it at a seeded offset. Reported per style:

* note-onset F1 (mir_eval, 50 ms onset tolerance, offsets ignored), with basic-pitch's ``predict``
  defaults and with our settings (onset threshold, minimum note length and re-onset merge gap
  chosen on the fit pieces);
* frame-level pitch-class F1 at 25 Hz (a frame's set of sounding pitch classes, ref vs est);
* drum-detector per-frame accuracy against ``labels.drum_flags`` of the drum track.

Notes starting in the first 0.1 s of a clip are left out of both sides (a note sounding across the
cut has no onset in the audio). Writes JSON and prints the markdown table for docs/data.md.

    python benchmarks/data_transcription.py --clips 20 --fit 6 --out benchmarks/results/data_transcription.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mir_eval
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from openmrt.data import transcribe  # noqa: E402
from openmrt.data.compose import compose, style_names  # noqa: E402
from openmrt.data.labels import drum_flags, n_frames, note_states  # noqa: E402
from openmrt.data.pipeline import render_piece  # noqa: E402
from openmrt.frame import FRAME_RATE, FRAME_SAMPLES  # noqa: E402

CLIP_S = 10.0
GAPS = (0.0, 0.03, 0.06, 0.1, 0.15)
ONSETS = (0.4, 0.5, 0.6, 0.7, 0.8)
MIN_MS = (58.0, 92.9, 127.7)


def clip(style: str, seed: int) -> dict:
    piece = compose(style, seed, 20)
    mix, _, labels, facts = render_piece(piece.midi, piece.duration, seed)
    rng = np.random.default_rng([seed, 99])
    total = labels.notes.shape[0]
    f0 = int(rng.integers(0, max(1, total - int(CLIP_S * FRAME_RATE) - 1)))
    t0 = f0 / FRAME_RATE
    frames = n_frames(CLIP_S)
    audio = mix[:, f0 * FRAME_SAMPLES:(f0 + frames) * FRAME_SAMPLES]
    ref = [(n.start - t0, n.end - t0, n.pitch) for i in piece.midi.instruments if not i.is_drum for n in i.notes
           if t0 <= n.start < t0 + CLIP_S or (n.start < t0 < n.end)]
    drums = drum_flags([n.start for i in piece.midi.instruments if i.is_drum for n in i.notes], total)[f0:f0 + frames]
    t = time.process_time()
    output = transcribe.model_output(audio, 48000)
    bp_s = time.process_time() - t
    feats = transcribe.drum_features(audio, 48000, frames)
    return {"style": style, "seed": seed, "soundfont": facts["soundfont"], "ref": ref, "output": output,
            "raw": transcribe.notes_from_output(output, 0.5, 0.3, 127.7),  # basic-pitch's predict() defaults
            "drums": drums.tolist(), "feats": feats.tolist(), "frames": frames, "bp_cpu_s": bp_s}


def ours(c: dict, onset: float, min_ms: float, gap: float) -> list:
    notes = transcribe.notes_from_output(c["output"], onset, 0.3, min_ms)
    return transcribe.merge_reonsets(notes, gap) if gap else notes


def onset_f1(ref, est) -> float:
    ref = [n for n in ref if n[0] >= 0.1]
    est = [n for n in est if n[0] >= 0.1]
    if not ref or not est:
        return float(not ref and not est)
    def arr(ns):
        intervals = np.array([[s, max(e, s + 0.01)] for s, e, _ in ns])
        return intervals, mir_eval.util.midi_to_hz(np.array([p for *_, p in ns]))
    ri, rp = arr(ref)
    ei, ep = arr(est)
    return float(mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep, onset_tolerance=0.05,
                                                                    offset_ratio=None)[2])


def pc_f1(ref, est, frames) -> float:
    def pcs(ns):
        st = note_states([(max(s, 0.0), e, p) for s, e, p in ns], frames) > 0
        return np.stack([st[:, k::12].any(1) for k in range(12)], axis=1)
    r, e = pcs(ref), pcs(est)
    tp = (r & e).sum()
    return float(2 * tp / max(1, r.sum() + e.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=20, help="held-out clips per style")
    ap.add_argument("--fit", type=int, default=6, help="clips per style to fit the drum detector and merge gap")
    ap.add_argument("--out", default="benchmarks/results/data_transcription.json")
    ap.add_argument("--write", action="store_true", help="rewrite openmrt/data/fitted.py with the fitted values")
    args = ap.parse_args()
    t_start = time.perf_counter()
    fit = [clip(style, 10_000 + s) for style in style_names() for s in range(args.fit)]
    print(f"fit clips: {time.perf_counter() - t_start:.0f} s", flush=True)

    # Onset threshold, minimum note length and merge gap: the best mean onset F1 on the fit clips.
    grid = {(o, m, g): float(np.mean([onset_f1(c["ref"], ours(c, o, m, g)) for c in fit]))
            for o in ONSETS for m in MIN_MS for g in GAPS}
    onset_th, min_ms, gap = max(grid, key=grid.get)
    print(f"chosen onset threshold {onset_th}, min note {min_ms} ms, merge gap {gap} s", flush=True)
    held = []
    for style in style_names():
        for s in range(args.clips):
            c = clip(style, 20_000 + s)
            c["est"] = ours(c, onset_th, min_ms, gap)
            c.pop("output")  # posteriorgrams are large; keep only the notes
            held.append(c)
        print(f"{style}: {time.perf_counter() - t_start:.0f} s", flush=True)

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X = np.concatenate([np.array(c["feats"]) for c in fit])
    y = np.concatenate([c["drums"] for c in fit])
    scaler = StandardScaler().fit(X)
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(scaler.transform(X), y)
    weights = lr.coef_[0] / scaler.scale_  # standardisation folded in: one dot product at run time
    bias = float(lr.intercept_[0] - (lr.coef_[0] * scaler.mean_ / scaler.scale_).sum())
    det = transcribe.DrumDetector(weights, bias)

    rows, per_style = [], {}
    for style in style_names():
        cs = [c for c in held if c["style"] == style]
        raw = [onset_f1(c["ref"], c["raw"]) for c in cs]
        merged = [onset_f1(c["ref"], c["est"]) for c in cs]
        pcf_raw = [pc_f1(c["ref"], c["raw"], c["frames"]) for c in cs]
        pcf = [pc_f1(c["ref"], c["est"], c["frames"]) for c in cs]
        acc = [float((det(np.array(c["feats"])) == np.array(c["drums"])).mean()) for c in cs]
        drum_share = float(np.mean([np.mean(c["drums"]) for c in cs]))
        per_style[style] = {"clips": len(cs), "onset_f1_raw": np.mean(raw), "onset_f1": np.mean(merged),
                            "pitch_class_f1_raw": np.mean(pcf_raw), "pitch_class_f1": np.mean(pcf),
                            "drum_accuracy": np.mean(acc), "drum_frames": drum_share}
        rows.append(f"| {style} | {len(cs)} | {np.mean(raw):.2f} | {np.mean(merged):.2f} | {np.mean(pcf_raw):.2f} | "
                    f"{np.mean(pcf):.2f} | {np.mean(acc):.3f} | {drum_share:.2f} |")
    all_flags = np.concatenate([c["drums"] for c in held])
    all_pred = np.concatenate([det(np.array(c["feats"])) for c in held])
    summary = {
        "onset_threshold": onset_th, "min_note_ms": min_ms, "merge_gap_s": gap,
        "fit_grid_onset_f1": {f"{o}/{m}/{g}": v for (o, m, g), v in grid.items()},
        "drum_accuracy": float((all_pred == all_flags).mean()),
        "drum_recall": float(all_pred[all_flags == 1].mean()),
        "drum_specificity": float(1 - all_pred[all_flags == 0].mean()),
        "onset_f1_raw": float(np.mean([v["onset_f1_raw"] for v in per_style.values()])),
        "onset_f1": float(np.mean([v["onset_f1"] for v in per_style.values()])),
        "pitch_class_f1_raw": float(np.mean([v["pitch_class_f1_raw"] for v in per_style.values()])),
        "pitch_class_f1": float(np.mean([v["pitch_class_f1"] for v in per_style.values()])),
        "basic_pitch_cpu_s_per_10s_clip": float(np.median([c["bp_cpu_s"] for c in held[1:]])),
        "wall_s": time.perf_counter() - t_start,
        "soundfonts": sorted({c["soundfont"] for c in held}),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "summary": summary, "per_style": per_style},
                                         indent=1, default=float))
    print("| style | clips | onset F1, basic-pitch defaults | onset F1, ours | pitch-class F1, defaults | "
          "pitch-class F1, ours | drum accuracy | drum frames |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(json.dumps(summary, indent=1, default=float))
    if args.write:
        print(f"wrote {write_fitted(len(fit), args.fit, summary['soundfonts'], onset_th, min_ms, gap, weights, bias)}")


def write_fitted(n: int, per: int, fonts: list[str], onset: float, min_ms: float, gap: float, weights, bias: float):
    """Rewrite openmrt/data/fitted.py with these values."""
    nums = [f"{w:.6g}" for w in weights]
    rows = "\n".join("    " + ", ".join(nums[i:i + 8]) + "," for i in range(0, len(nums), 8))
    path = Path(transcribe.__file__).with_name("fitted.py")
    path.write_text(FITTED.format(date=time.strftime("%Y-%m-%d"), n=n, per=per, fonts=" + ".join(fonts), onset=onset,
                                  min_ms=min_ms, gap=gap, weights=rows, bias=f"{bias:.6g}"))
    return path


FITTED = '''"""Values fitted by benchmarks/data_transcription.py (run {date}, {n} fit pieces, {per} per
style; {fonts}).
Rerunning the benchmark with ``--write`` rewrites this file."""

ONSET_THRESHOLD = {onset}  # basic-pitch's default is 0.5
MIN_NOTE_MS = {min_ms}  # basic-pitch's default is 127.7
MERGE_GAP_S = {gap}  # re-onset merge gap with the best onset F1 (0: merging off)
# Logistic drum detector on transcribe.drum_features (44 features; standardisation folded in).
DRUM_WEIGHTS = (
{weights}
)
DRUM_BIAS = {bias}
'''


if __name__ == "__main__":
    main()

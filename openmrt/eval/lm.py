"""LM evaluation: does a bundle play the notes, drop the drums and take the style it is told?

    openmrt eval lm [--data HELDOUT_SHARDS] [--model auto] [--clips 12 --seconds 8] [-o lm_eval.json]

Every figure is judged against the ceiling the same judge reaches on the source rendering
(basic-pitch over-detects, so absolute figures mislead):

* note-onset F1: the held-out clip's notes (its source MIDI, Auto-Strum off: onset then held)
  drive generation; the generated audio is transcribed by basic-pitch and scored against the
  source notes (50 ms, ±50 cents, offsets ignored); ceiling = the source rendering, same judge.
* pitch-class F1 at 25 Hz: frames × 12 pitch classes sounding, transcription vs source MIDI.
* drums-off energy ratio: percussive energy above 12 kHz (librosa HPSS) of the clip generated
  with drums off over the same clip with drums on, on clips whose piece has drums, and over the
  same clip with drums auto (the flag masked: the LM decides); its floor is the source mix
  without its drum stem over the full mix (what a perfect drums off would score).
* style top-1: for each style of the data engine, generate with its name as the prompt (notes and
  drums unspecified), embed the audio with the bundle's style model, classify among the names.

Generation goes through ``FrameStream`` exactly as ``openmrt generate`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from openmrt import tokens as tk
from openmrt.data.heldout import HeldoutClip, Notes, heldout_clips, standard_heldout
from openmrt.eval.codec import onset_f1
from openmrt.frame import FRAME_RATE, FRAME_SAMPLES, SAMPLE_RATE

__all__ = ["PERCUSSIVE_LOW_HZ", "Piece", "evaluate_lm", "heldout_pieces", "percussive_energy", "pitch_class_f1"]


Piece = HeldoutClip  # one held-out clip with everything the judge and the conditioning need


def heldout_pieces(root: str | Path, count: int = 12, seconds: float = 8.0, skip_seconds: float = 2.0) -> list[Piece]:
    """One clip per example (after ``skip_seconds`` of intro), in shard order, up to ``count``; only
    examples whose shard keeps the source MIDI (the judge needs its notes) and that hold a whole clip."""
    return heldout_clips(root, count, seconds, skip_seconds=skip_seconds, per_example=1, need_midi=True)


# ------------------------------------------------------------------------------ judges


def pitch_class_roll(notes: Notes, frames: int) -> np.ndarray:
    """[frames, 12] bool: pitch classes sounding in each 25 Hz frame (a note covers the frames it overlaps)."""
    roll = np.zeros((frames, 12), bool)
    for start, end, pitch in notes:
        a, b = int(math.floor(start * FRAME_RATE)), int(math.ceil(max(end, start + 1e-3) * FRAME_RATE))
        roll[max(0, a):min(frames, b), pitch % 12] = True
    return roll


def pitch_class_f1(ref: Notes, est: Notes, frames: int) -> float:
    """F1 over (frame, pitch class) cells at 25 Hz; 1.0 when both are silent."""
    r, e = pitch_class_roll(ref, frames), pitch_class_roll(est, frames)
    tp = float((r & e).sum())
    if not r.any() and not e.any():
        return 1.0
    return 2 * tp / float(r.sum() + e.sum())


PERCUSSIVE_LOW_HZ = 12000.0


def percussive_energy(audio: np.ndarray, low_hz: float = PERCUSSIVE_LOW_HZ) -> float:
    """Mean percussive power above ``low_hz`` (librosa HPSS, margin 3, of the mono mix) of [N, 2] audio.

    Hats, cymbals and snares own the top octave. Lower, HPSS calls the attacks of bright pitched
    parts percussive too: on composed pieces with their drum stems, the mix without its drums keeps
    0.6–0.9 of the full-band percussive energy, a mean 0.079 above 5 kHz (23 training pieces with drums;
    distorted rock guitars up to 0.57) and 0.022 above 12 kHz (median 0.002; docs/models.md).
    """
    import librosa

    mono = np.asarray(audio, np.float32).mean(axis=1)
    power = np.abs(librosa.stft(mono, n_fft=2048, hop_length=512)) ** 2
    _, perc = librosa.decompose.hpss(power, margin=3.0)
    band = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=2048) >= low_hz
    return float(perc[band].mean())


def _transcribe(audio: np.ndarray) -> Notes:
    from openmrt.data.transcribe import transcribe_notes

    return transcribe_notes(np.asarray(audio).T, SAMPLE_RATE)


def _note_scores(ref: Notes, audio: np.ndarray, frames: int) -> tuple[float, float]:
    est = _transcribe(audio)
    return onset_f1(ref, est)[2], pitch_class_f1(ref, est, frames)


# ------------------------------------------------------------------------------ generation

Generate = Callable[[np.ndarray, int], np.ndarray]  # (raw conditioning [T, 144], samples) -> audio [samples, 2]


def bundle_generator(bundle, seed: int = 0, temperature: float = 1.3, top_k: int = 40) -> Generate:
    """Offline generation from a fresh stream per call, as ``openmrt generate`` does."""
    from openmrt.engine.frames import FrameStream
    from openmrt.engine.offline import render

    def generate(cond: np.ndarray, samples: int) -> np.ndarray:
        stream = FrameStream(bundle, seed=seed, temperature=temperature, top_k=top_k)
        return render(stream, samples, lambda t: cond[t])[0]

    return generate


def conditioning(piece: Piece, style: tuple[int, ...] | None, drums: bool | None) -> np.ndarray:
    """[T, 144] raw conditioning for a piece: its note states (Auto-Strum off), a drums flag (None: masked)."""
    flag = tk.MASKED if drums is None else int(drums)
    return np.stack([tk.make_conditioning(style, piece.states[t], flag) for t in range(len(piece.states))])


def evaluate_lm(generate: Generate, pieces: list[Piece], style_model=None, style_seconds: float = 8.0,
                styles: list[str] | None = None) -> dict:
    """All figures of the module docstring, as means over pieces, with their ceilings and ratios."""
    from openmrt.style.data import style_label

    on, pc, on_ceil, pc_ceil, ratio, ratio_auto, floor = [], [], [], [], [], [], []
    for p in pieces:
        frames, n = len(p.states), len(p.audio)
        style = style_model.tokens_for([(style_label(p.style), 1.0)]) if style_model is not None and p.style else None
        with_drums = bool(p.drums.any())
        audio = generate(conditioning(p, style, drums=with_drums or None), n)
        if p.notes:
            o, c = _note_scores(p.notes, audio, frames)
            oc, cc = _note_scores(p.notes, p.audio, frames)
            on.append(o), pc.append(c), on_ceil.append(oc), pc_ceil.append(cc)
        if with_drums:
            off = percussive_energy(generate(conditioning(p, style, drums=False), n))
            auto = generate(conditioning(p, style, drums=None), n)
            ratio.append(off / max(percussive_energy(audio), 1e-12))
            ratio_auto.append(off / max(percussive_energy(auto), 1e-12))
            if p.drum_audio is not None:
                floor.append(percussive_energy(p.audio - p.drum_audio) / max(percussive_energy(p.audio), 1e-12))

    def mean(x: list[float]) -> float:
        return float(np.mean(x)) if x else math.nan

    out = {"pieces": len(pieces), "note_clips": len(on),
           "onset_f1": mean(on), "onset_f1_ceiling": mean(on_ceil),
           "pitch_class_f1": mean(pc), "pitch_class_f1_ceiling": mean(pc_ceil),
           "drum_clips": len(ratio), "drums_off_energy_ratio": mean(ratio),
           "drums_off_vs_auto_energy_ratio": mean(ratio_auto), "drums_off_energy_floor": mean(floor)}
    out["onset_f1_ratio"] = out["onset_f1"] / out["onset_f1_ceiling"] if out["onset_f1_ceiling"] > 0 else math.nan
    out["pitch_class_f1_ratio"] = (out["pitch_class_f1"] / out["pitch_class_f1_ceiling"]
                                   if out["pitch_class_f1_ceiling"] > 0 else math.nan)
    if style_model is not None:
        out.update(style_top1(generate, style_model, styles or _style_names(), style_seconds))
    return out


def _style_names() -> list[str]:
    from openmrt.data.compose import style_names
    from openmrt.style.data import style_label

    return [style_label(s) for s in style_names()]


def style_top1(generate: Generate, style_model, styles: list[str], seconds: float) -> dict:
    """Generate each style from its name alone; classify the audio's embedding among the names' embeddings."""
    samples = int(round(seconds * FRAME_RATE)) * FRAME_SAMPLES
    raw = np.stack([style_model.embed_text(s) for s in styles])
    texts = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    hits, confusion = [], {}
    for i, s in enumerate(styles):
        tokens = style_model.tokenize(raw[i])  # = tokens_for([(s, 1.0)]), without embedding the text again
        cond = np.stack([tk.make_conditioning(tokens)] * (samples // FRAME_SAMPLES))
        emb = style_model.embed_audio(generate(cond, samples))
        guess = int(np.argmax(texts @ (emb / np.linalg.norm(emb))))
        hits.append(guess == i)
        confusion[s] = styles[guess]
    return {"style_top1": float(np.mean(hits)), "style_guesses": confusion}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="openmrt eval lm", description=__doc__.split("\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from openmrt.device import add_device_args

    ap.add_argument("--model", default="auto", help="bundle: auto (the best installed, printed), demo, mrt2_small, "
                                                    "a PATH, random:LM[+CODEC]")
    ap.add_argument("--data", help="held-out shard folder (not used in training; default: the standard held-out "
                                   "set, composed into the cache on first use)")
    ap.add_argument("--clips", type=int, default=12, help="pieces (one clip each)")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--style", help="style model for the prompts (default: the bundle's own)")
    ap.add_argument("--no-style", action="store_true", help="skip the style figure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("-o", "--out", help="JSON file for the figures")
    add_device_args(ap)


def run(args: argparse.Namespace) -> dict:
    import torch

    from openmrt.engine.bundle import load_bundle
    from openmrt.errors import DataError

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model, seed=args.seed, device=args.device, dtype=args.dtype)
    if args.style:
        from openmrt.style import load_style

        bundle.style = load_style(args.style)
    if args.data is None:
        args.data = standard_heldout(echo=lambda line: print(line, file=sys.stderr))
    pieces = heldout_pieces(args.data, args.clips, args.seconds)
    if not pieces:
        raise DataError(f"{args.data}: no example with its source MIDI and {args.seconds} s of audio")
    out = {"model": bundle.name, "data": str(args.data), "seconds": args.seconds,
           **evaluate_lm(bundle_generator(bundle, args.seed), pieces, None if args.no_style else bundle.style,
                         args.seconds)}
    text = json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return out

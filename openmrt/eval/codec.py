"""Codec quality: spectral distances, SI-SDR, note-onset F1 against the source MIDI, codebook usage.

    openmrt eval codec [--data HELDOUT_SHARDS] [--codec demo] [-o codec_eval.json]

Without ``--data`` both evaluations use the standard held-out set (``openmrt.data.heldout.standard_heldout``).

The spectral distances are defined once in openmrt/spectral.py: the codec trainer's losses use the
same definitions, so a logged loss and a reported metric agree.

Onset F1. Decoded (and, as the ceiling, original) audio is transcribed by basic-pitch
(openmrt/data/transcribe.py) and scored with ``mir_eval.transcription`` against the notes of the
source MIDI: 50 ms onset tolerance, pitch within 50 cents, offsets ignored. The clips and their
source notes come from ``openmrt.data.heldout.heldout_clips`` (the MIDI the shard keeps, the
composition regenerated from the build plan, or the 25 Hz onset labels, in that order).
Drum tracks are not in the reference, so drum hits that basic-pitch reports as notes count
against the original and the decoded audio alike.

The demo codec v2 (the default codec) is scored by ``HeldoutJudge``: the same onset F1 after its phase head,
plus log-magnitude L1 on its grid, its pitch gates' F1 and the demo style model's top-1 agreement.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from openmrt.data.heldout import HeldoutClip, Notes, heldout_clips, standard_heldout
from openmrt.errors import DataError
from openmrt.frame import FRAME_SAMPLES, SAMPLE_RATE
from openmrt.spectral import LOG_FLOOR, frame_magnitudes, mel_l1, mono_rows, stft_distance

__all__ = ["Clip", "HeldoutJudge", "Notes", "clip_onset_f1", "evaluate_codec", "frame_diagnostics", "heldout_clips",
           "mel_l1", "onset_f1", "perplexity", "random_phase_floor", "si_sdr", "stft_distance"]


Clip = HeldoutClip  # a held-out clip (openmrt/data/heldout.py: ``heldout_clips`` picks them)


def si_sdr(ref: torch.Tensor, est: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per row [B·C] of [B, N, C] audio (zero-mean, projection onto ref)."""
    r, e = mono_rows(ref).double(), mono_rows(est).double()
    r, e = r - r.mean(-1, keepdim=True), e - e.mean(-1, keepdim=True)
    target = (e * r).sum(-1, keepdim=True) / ((r * r).sum(-1, keepdim=True) + eps) * r
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / ((e - target).pow(2).sum(-1) + eps))


def perplexity(codes: np.ndarray | torch.Tensor, codebook_size: int = 1024) -> np.ndarray:
    """exp(entropy) of each level's code histogram: [L] for codes [..., L] (1 = one code, K = uniform)."""
    c = np.asarray(codes).reshape(-1, np.asarray(codes).shape[-1])
    out = []
    for level in range(c.shape[1]):
        p = np.bincount(c[:, level], minlength=codebook_size) / max(1, len(c))
        p = p[p > 0]
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return np.array(out)


def onset_f1(ref: Notes, est: Notes, tolerance: float = 0.05) -> tuple[float, float, float]:
    """(precision, recall, F1) of note onsets with matching pitch (±50 cents), offsets ignored."""
    from mir_eval.transcription import precision_recall_f1_overlap

    if not ref or not est:
        return (0.0, 0.0, 0.0) if ref or est else (1.0, 1.0, 1.0)

    def arrays(notes: Notes) -> tuple[np.ndarray, np.ndarray]:
        iv = np.array([[s, max(e, s + 1e-3)] for s, e, _ in notes])
        return iv, 440.0 * 2.0 ** ((np.array([p for *_, p in notes], dtype=float) - 69) / 12)

    (ri, rp), (ei, ep) = arrays(ref), arrays(est)
    p, r, f, _ = precision_recall_f1_overlap(ri, rp, ei, ep, onset_tolerance=tolerance, offset_ratio=None)
    return float(p), float(r), float(f)


# ---------------------------------------------------------------------------- the evaluation


@torch.no_grad()
def frame_diagnostics(spec: torch.Tensor, audio: torch.Tensor) -> tuple[float, float]:
    """(gain, inconsistency) of a decoder's own STFT frames Y [B, 4, T, 480] for [B, N, 2] audio X:
    gain = mean |Y| / mean |STFT(X)|, inconsistency = mean |Y − STFT(iSTFT(Y))| / mean |Y|.

    A decoder that matches the waveform's spectrum with frames much louder than the audio, whose
    overlap-add cancels (gain ≫ 1, inconsistency near 1), outputs incoherent partials: a noise wash
    without pitch. A faithful decoder has both near (1, 0).
    """
    from openmrt.codec.stft import istft, stft

    spec = spec.float()
    frames = spec.shape[2]
    ref = frame_magnitudes(stft(audio.float(), num_frames=frames))
    again = stft(istft(spec), num_frames=frames)
    gain = frame_magnitudes(spec).mean() / ref.mean().clamp(min=1e-12)
    return float(gain), float((spec - again).abs().mean() / spec.abs().mean().clamp(min=1e-12))


@torch.no_grad()
def random_phase_floor(clips: list[Clip], onsets: bool = True, seed: int = 0) -> dict:
    """Mel L1 and onset F1 of the clips' *own* codec-STFT magnitudes with random phases.

    The best a decoder whose frames have the right magnitudes but unrelated phases can do: it shows
    how much of the onset score lives in the phase (on composed music, almost all of it).
    """
    from openmrt.codec.stft import istft, stft

    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.stack([c.audio for c in clips]))
    frames = 4 * (x.shape[1] // FRAME_SAMPLES)
    spec = stft(x, num_frames=frames)
    mag = frame_magnitudes(spec)
    phase = torch.rand(mag.shape, generator=gen) * (2 * math.pi)
    y = istft(torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], 2).flatten(1, 2))
    out = {"mel_l1": float(mel_l1(x[:, : y.shape[1]], y))}
    if onsets:
        out.update(_onset_scores(clips, list(y.numpy())))
    return out


@torch.no_grad()
def evaluate_codec(model, clips: list[Clip], levels: int = 12, onsets: bool = True, batch: int = 4) -> dict:
    """Mean metrics over ``clips``: mel L1, STFT distance, SI-SDR (dB), perplexity per level, the
    decoder frames' gain and inconsistency (``frame_diagnostics``), and (with ``onsets``) onset F1
    of decoded and original audio against the source notes."""
    from openmrt.codec.stft import istft

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mel, stft, sdr, codes_all, decoded, frames = [], [], [], [], [], []
    for i in range(0, len(clips), batch):
        x = torch.from_numpy(np.stack([c.audio for c in clips[i:i + batch]])).to(device)
        codes = model.encode(x, levels)
        spec = model.decoder_spectrogram(model.quantizer.decode(codes))
        y = istft(spec)  # = model.decode(codes), keeping the frames for their diagnostics
        frames.append(frame_diagnostics(spec, x))
        ref = x[:, : y.shape[1]]
        for b in range(x.shape[0]):
            mel.append(float(mel_l1(ref[b:b + 1], y[b:b + 1])))
            stft.append(float(stft_distance(ref[b:b + 1], y[b:b + 1])))
            sdr.append(float(si_sdr(ref[b:b + 1], y[b:b + 1]).mean()))
        codes_all.append(codes.reshape(-1, codes.shape[-1]).cpu().numpy())
        decoded += list(y.float().cpu().numpy())
    out = {"clips": len(clips), "seconds": sum(len(c.audio) for c in clips) / SAMPLE_RATE, "levels": levels,
           "mel_l1": float(np.mean(mel)), "stft_distance": float(np.mean(stft)), "si_sdr_db": float(np.mean(sdr)),
           "perplexity": [round(p, 1) for p in perplexity(np.concatenate(codes_all), model.config.codebook_size)],
           "frame_gain": float(np.mean([g for g, _ in frames])),
           "frame_inconsistency": float(np.mean([c for _, c in frames]))}
    if onsets:
        out.update(_onset_scores(clips, decoded))
    model.train(was_training)
    return out


def clip_onset_f1(clip: Clip, audio: np.ndarray) -> float | None:
    """Onset F1 of ``audio`` (the clip or its decode, [N, 2]) against the clip's notes that start in its first N
    samples (a decoded clip is one frame shorter: both are scored on the common span); None without notes."""
    from openmrt.data.transcribe import transcribe_notes

    end = len(audio) / SAMPLE_RATE
    ref = [n for n in clip.notes if n[0] < end - 0.05]
    if not ref:
        return None
    est = [n for n in transcribe_notes(audio.T, SAMPLE_RATE) if n[0] < end - 0.05]
    return onset_f1(ref, est)[2]


def _onset_scores(clips: list[Clip], decoded: list[np.ndarray]) -> dict:
    f_orig, f_dec = [], []
    for clip, y in zip(clips, decoded, strict=True):
        fo = clip_onset_f1(clip, clip.audio[: len(y)])
        if fo is None:
            continue
        f_orig.append(fo)
        f_dec.append(clip_onset_f1(clip, y))
    fo, fd = float(np.mean(f_orig)) if f_orig else math.nan, float(np.mean(f_dec)) if f_dec else math.nan
    return {"onset_clips": len(f_orig), "onset_f1_original": fo, "onset_f1_decoded": fd,
            "onset_f1_ratio": fd / fo if fo > 0 else math.nan}


class HeldoutJudge:
    """Held-out figures of a demo codec v2 (openmrt/codec/v2.py) on fixed clips: log-magnitude L1 on its grid,
    mel L1, the decoder's pitch-gate F1, perplexity per level, note-onset F1 after the phase head as a ratio to
    the original's (``onsets``) and the demo style model's top-1 agreement (``style``). The codec trainer's
    periodic evaluation; the originals' onset F1 is computed once."""

    def __init__(self, root: str | Path, count: int, seconds: float, onsets: bool, per_example: int | None = None,
                 style: bool = False):
        self.clips = heldout_clips(root, count, seconds, per_example=per_example)
        if not self.clips:
            raise DataError(f"{root}: no held-out clips of {seconds} s")
        self.onsets, self.style = onsets, style
        self._orig: list[float] | None = None

    @torch.no_grad()
    def __call__(self, model, levels: int, batch: int = 4, oracle: bool = False) -> dict:
        """``oracle``: score the clips' own grid magnitudes through the phase head instead of the decoder's
        (the ceiling of any magnitude decoder with this phase head)."""
        from openmrt.codec.v2 import frame_pitch_targets

        was = model.training
        model.eval()
        device = next(model.parameters()).device
        logmag, mel, pitch_tp, pitch_fp, pitch_fn, codes_all, decoded = [], [], 0.0, 0.0, 0.0, [], []
        for i in range(0, len(self.clips), batch):
            clips = self.clips[i:i + batch]
            x = torch.from_numpy(np.stack([c.audio for c in clips])).to(device)
            target, long = model.encoder_inputs(x)
            codes = model.quantizer.encode(model.encoder(target, long), levels)
            out = model.decode_magnitudes(model.quantizer.decode(codes))
            if oracle:
                out["mag"] = target
            logmag.append(float((torch.log(out["mag"] + LOG_FLOOR) - torch.log(target + LOG_FLOOR)).abs().mean()))
            notes = torch.from_numpy(np.stack([c.states for c in clips])).to(device)
            on, pred = frame_pitch_targets(notes) > 0, out["pitch_logits"] > 0
            pitch_tp += float((on & pred).sum())
            pitch_fp += float((~on & pred).sum())
            pitch_fn += float((on & ~pred).sum())
            y = model.magnitudes_to_audio(out["mag"].float())
            for b in range(x.shape[0]):
                mel.append(float(mel_l1(x[b:b + 1, : y.shape[1]], y[b:b + 1])))
            codes_all.append(codes.reshape(-1, codes.shape[-1]).cpu().numpy())
            decoded += list(y.cpu().numpy())
        res = {"clips": len(self.clips), "logmag_l1": float(np.mean(logmag)), "mel_l1": float(np.mean(mel)),
               "pitch_f1": 2 * pitch_tp / max(1.0, 2 * pitch_tp + pitch_fp + pitch_fn),
               "perplexity": [round(float(p), 1) for p in perplexity(np.concatenate(codes_all),
                                                                     model.config.codebook_size)]}
        if self.onsets:
            if self._orig is None:
                self._orig = [clip_onset_f1(c, c.audio[: len(y)]) for c, y in zip(self.clips, decoded, strict=True)]
            pairs = [(o, clip_onset_f1(c, y)) for c, y, o in zip(self.clips, decoded, self._orig, strict=True)
                     if o is not None]
            fo, fd = np.mean([o for o, _ in pairs]), np.mean([d for _, d in pairs])
            res.update({"onset_clips": len(pairs), "onset_f1_original": float(fo), "onset_f1_decoded": float(fd),
                        "onset_f1_ratio": float(fd / fo) if fo > 0 else math.nan})
        if self.style:
            res.update(self._style_agreement(decoded))
        model.train(was)
        return res

    def _style_agreement(self, decoded: list[np.ndarray]) -> dict:
        """How often our demo style model gives the decoded clip the original's top-1 style (over every style
        label of the data engine), and how often the original's top-1 is the clip's true style (context)."""
        from openmrt.data.styles import STYLES
        from openmrt.style import load_style
        from openmrt.style.data import style_label

        sm = load_style("demo")
        names = list(STYLES)
        text = sm.text_embeddings([style_label(n) for n in names])
        text = text / np.linalg.norm(text, axis=1, keepdims=True)

        def top1(audio: np.ndarray) -> int:
            return int(np.argmax(text @ sm.embed_audio(np.ascontiguousarray(audio, np.float32))))

        orig = [top1(c.audio[: len(y)]) for c, y in zip(self.clips, decoded, strict=True)]
        dec = [top1(y) for y in decoded]
        true = [names.index(c.style) if c.style in names else -1 for c in self.clips]
        return {"style_top1_agreement": float(np.mean(np.array(orig) == np.array(dec))),
                "style_top1_original_correct": float(np.mean(np.array(orig) == np.array(true)))}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    from openmrt.codec.checkpoint import add_codec_args
    from openmrt.device import add_device_args

    add_codec_args(ap)
    ap.add_argument("--data", help="held-out shard folder (not used in training; default: the standard held-out "
                                   "set, composed into the cache on first use)")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--levels", type=int, default=12)
    ap.add_argument("--no-onsets", action="store_true", help="skip the basic-pitch transcription")
    ap.add_argument("--random-phase-floor", action="store_true", help="also score the clips' own magnitudes "
                    "with random phases (what a decoder with right magnitudes and incoherent phases can reach)")
    ap.add_argument("--oracle", action="store_true", help="codec v2: score the clips' true magnitudes through its "
                    "phase head instead of its decoder's (the ceiling of any magnitude decoder)")
    ap.add_argument("--no-style", action="store_true", help="codec v2: skip the demo style model's top-1 agreement")
    ap.add_argument("--per-example", type=int, help="codec v2: at most this many clips per example (default: all "
                    "that fit)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("-o", "--out", type=Path, help="also write the JSON here")
    add_device_args(ap)


def run(args: argparse.Namespace) -> dict:
    from openmrt.codec.checkpoint import load_codec
    from openmrt.codec.v2 import CodecV2
    from openmrt.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_codec(args.codec, resolve_device(args.device), args.encoder, need_encoder=True)
    if args.data is None:
        args.data = standard_heldout(echo=lambda line: print(line, file=sys.stderr))
    if isinstance(model, CodecV2):  # the demo codec v2 has its own judge (grid magnitudes, pitch gates, style)
        judge = HeldoutJudge(args.data, args.clips, args.seconds, not args.no_onsets, args.per_example,
                             style=not args.no_style)
        clips = judge.clips
        res = {"codec": str(args.codec or "demo"), "data": str(args.data),
               "seconds": sum(len(c.audio) for c in clips) / SAMPLE_RATE, "levels": args.levels,
               **judge(model, args.levels, oracle=args.oracle)}
    else:
        clips = heldout_clips(args.data, args.clips, args.seconds)
        res = evaluate_codec(model, clips, args.levels, onsets=not args.no_onsets)
    if args.random_phase_floor:  # the clips' own magnitudes, whatever the codec
        res["random_phase_floor"] = random_phase_floor(clips, onsets=not args.no_onsets)
    res["eval_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return res

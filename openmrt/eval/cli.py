"""``openmrt eval lm|codec|roundtrip``: the LM figures (eval/lm.py) and the codec's (eval/codec.py) on held-out
shards, and one audio file through a codec with metrics and spectrograms (eval/roundtrip.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from openmrt.eval import codec, lm

    e = sub.add_parser("eval", help="evaluate models on held-out data").add_subparsers(dest="what", required=True)
    p = e.add_parser("lm", help="note-onset and pitch-class F1 vs ceiling, drums-off ratio, style top-1")
    lm.add_arguments(p)
    p.set_defaults(func=_lm)
    p = e.add_parser("codec", help="codec on held-out shards: mel L1, STFT distance, SI-SDR, perplexity, onset F1")
    codec.add_arguments(p)
    p.set_defaults(func=_codec)
    p = e.add_parser("roundtrip", help="audio -> codes -> audio: metrics, decoded file, PNG of both spectrograms")
    _roundtrip_arguments(p)
    p.set_defaults(func=_roundtrip)


def _lm(args: argparse.Namespace) -> int:
    from openmrt.eval import lm

    lm.run(args)
    return 0


def _codec(args: argparse.Namespace) -> int:
    from openmrt.eval import codec

    codec.run(args)
    return 0


def _roundtrip_arguments(p: argparse.ArgumentParser) -> None:
    from openmrt.codec.checkpoint import add_codec_args
    from openmrt.device import add_device_args

    p.add_argument("input", type=Path)
    p.add_argument("-o", "--out", type=Path, help="decoded audio (default IN.roundtrip.wav)")
    p.add_argument("--png", type=Path, help="spectrograms (default IN.roundtrip.png)")
    p.add_argument("--levels", type=int, default=12)
    p.add_argument("--midi", type=Path, help="the source MIDI: note-onset F1 of original and decoded against it")
    p.add_argument("--onsets", action="store_true", help="onset F1 of the decoded vs the original's transcription")
    add_codec_args(p)
    add_device_args(p)


def _roundtrip(args: argparse.Namespace) -> int:
    import torch

    from openmrt.audio import read_audio, write_audio
    from openmrt.codec.checkpoint import load_codec
    from openmrt.device import resolve_device
    from openmrt.eval.roundtrip import roundtrip_file, spectrogram_png

    model = load_codec(args.codec, resolve_device(args.device), args.encoder, need_encoder=True)
    audio = read_audio(args.input)
    with torch.inference_mode():
        decoded, metrics = roundtrip_file(model, audio, args.levels, args.midi, args.onsets)
    stem = str(args.input.with_suffix(""))
    out = args.out or Path(stem + ".roundtrip.wav")
    write_audio(out, decoded, subtype="FLOAT" if str(out).endswith(".wav") else None)
    png = spectrogram_png(audio, decoded, args.png or Path(stem + ".roundtrip.png"),
                          f"({Path(args.codec or 'demo').name}, {args.levels} levels)")
    print(json.dumps(metrics))
    print(f"wrote {out} and {png}")
    return 0

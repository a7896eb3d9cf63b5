"""``openmrt codec encode|decode|roundtrip``: audio files <-> codec codes (``.npy``, int32 [frames, levels]).

Weights: the official files (``--lm-checkpoint`` for the decoder + codebook, ``--encoder`` for
the encoder) or one of our own checkpoints (``--checkpoint``; ``roundtrip`` defaults to the shipped demo codec).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from openmrt.errors import CheckpointError, DataError


def _weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, help="an openmrt codec checkpoint (safetensors with config)")
    p.add_argument("--lm-checkpoint", type=Path, help="official checkpoints/mrt2_*.safetensors (decoder, codebook)")
    p.add_argument("--encoder", type=Path, help="official resources/spectrostream/encoder.safetensors")
    p.add_argument("--device", default="cpu")


def _load(args: argparse.Namespace, need: str):
    from openmrt.codec import SpectroStream, load_official
    from openmrt.codec.checkpoint import load_codec

    if args.checkpoint:
        return load_codec(args.checkpoint, args.device)
    if need == "encoder" and not (args.encoder and args.lm_checkpoint):
        raise CheckpointError("encoding needs --checkpoint, or both --encoder and --lm-checkpoint (for the codebook)")
    if need == "decoder" and not args.lm_checkpoint:
        raise CheckpointError("decoding needs --checkpoint or --lm-checkpoint")
    model = SpectroStream()
    load_official(model, args.lm_checkpoint, args.encoder if need == "encoder" else None)
    return model.eval().to(args.device)


@torch.inference_mode()
def _encode(args: argparse.Namespace) -> int:
    from openmrt.audio import read_audio

    model = _load(args, "encoder")
    audio = torch.from_numpy(read_audio(args.input))[None].to(args.device)
    codes = model.encode(audio, args.levels)[0].to(torch.int32).cpu().numpy()
    out = args.out or args.input.with_suffix(".codes.npy")
    np.save(out, codes)
    print(f"{out}: {codes.shape[0]} frames x {codes.shape[1]} levels")
    return 0


@torch.inference_mode()
def _decode(args: argparse.Namespace) -> int:
    from openmrt.audio import write_audio
    from openmrt.codec import official_output

    try:
        codes = np.load(args.input)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read codes from {args.input}: {e}") from e
    if codes.ndim != 2:
        raise DataError(f"{args.input}: codes must be [frames, levels], got shape {codes.shape}")
    model = _load(args, "decoder")
    y = model.decode(torch.from_numpy(codes.astype(np.int64))[None].to(args.device))[0]
    if args.official_gain:
        y = official_output(y)
    out = args.out or Path(str(args.input).removesuffix(".npy").removesuffix(".codes") + ".decoded.wav")
    write_audio(out, y.cpu().numpy(), subtype="FLOAT" if str(out).endswith(".wav") else None)
    print(f"{out}: {y.shape[0] / 48000:.2f} s")
    return 0


DEMO_CODEC = Path(__file__).resolve().parents[1] / "assets" / "demo" / "codec.safetensors"


@torch.inference_mode()
def _roundtrip(args: argparse.Namespace) -> int:
    import json

    from openmrt.audio import read_audio, write_audio
    from openmrt.eval.roundtrip import roundtrip_file, spectrogram_png

    if not (args.checkpoint or args.lm_checkpoint):
        if not DEMO_CODEC.is_file():
            raise CheckpointError(f"no codec given and the demo codec {DEMO_CODEC} is not installed")
        args.checkpoint = DEMO_CODEC
    model = _load(args, "encoder")
    audio = read_audio(args.input)
    decoded, metrics = roundtrip_file(model, audio, args.levels, args.midi, args.onsets)
    stem = str(args.input.with_suffix(""))
    out = args.out or Path(stem + ".roundtrip.wav")
    write_audio(out, decoded, subtype="FLOAT" if str(out).endswith(".wav") else None)
    png = spectrogram_png(audio, decoded, args.png or Path(stem + ".roundtrip.png"),
                          f"({Path(args.checkpoint or args.lm_checkpoint).name}, {args.levels} levels)")
    print(json.dumps(metrics))
    print(f"wrote {out} and {png}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codec", help="SpectroStream codec: encode audio to codes, decode codes to audio")
    cmds = p.add_subparsers(dest="codec_command", required=True)
    enc = cmds.add_parser("encode", help="audio file -> codes .npy (int32 [frames, levels])")
    enc.add_argument("input", type=Path)
    enc.add_argument("--out", type=Path)
    enc.add_argument("--levels", type=int, default=12, help="RVQ levels to keep (default 12, as the LM uses)")
    _weights(enc)
    enc.set_defaults(func=_encode)
    dec = cmds.add_parser("decode", help="codes .npy -> audio (WAV as float, or FLAC)")
    dec.add_argument("input", type=Path)
    dec.add_argument("--out", type=Path)
    dec.add_argument(
        "--official-gain", action="store_true", help="apply the official API's 0.5 gain and int16 rounding"
    )
    _weights(dec)
    dec.set_defaults(func=_decode)
    rt = cmds.add_parser("roundtrip", help="audio -> codes -> audio: metrics, decoded file, PNG of both spectrograms")
    rt.add_argument("input", type=Path)
    rt.add_argument("--out", type=Path, help="decoded audio (default IN.roundtrip.wav)")
    rt.add_argument("--png", type=Path, help="spectrograms (default IN.roundtrip.png)")
    rt.add_argument("--levels", type=int, default=12)
    rt.add_argument("--midi", type=Path, help="the source MIDI: note-onset F1 of original and decoded against it")
    rt.add_argument("--onsets", action="store_true", help="onset F1 of the decoded vs the original's transcription")
    _weights(rt)
    rt.set_defaults(func=_roundtrip)

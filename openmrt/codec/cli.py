"""``openmrt codec encode|decode``: audio files <-> codec codes (``.npy``, int32 [frames, levels]).

Which codec: ``--codec`` (default: the shipped demo codec), resolved by
:func:`openmrt.codec.checkpoint.load_codec`: ``demo``, one of our codec files, or an official MRT2
checkpoint file or bundle folder (``--encoder`` when its encoder.safetensors is elsewhere).
A file's round trip with metrics and pictures is ``openmrt eval roundtrip``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from openmrt.codec.checkpoint import add_codec_args
from openmrt.device import add_device_args, resolve_device
from openmrt.errors import DataError
from openmrt.frame import SAMPLE_RATE


def _load(args: argparse.Namespace, need_encoder: bool):
    from openmrt.codec.checkpoint import load_codec

    return load_codec(args.codec, resolve_device(args.device), args.encoder, need_encoder=need_encoder)


@torch.inference_mode()
def _encode(args: argparse.Namespace) -> int:
    from openmrt.audio import read_audio

    model = _load(args, need_encoder=True)
    device = next(model.parameters()).device
    audio = torch.from_numpy(read_audio(args.input))[None].to(device)
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
    model = _load(args, need_encoder=False)
    if codes.min() < 0 or codes.max() >= model.config.codebook_size or codes.shape[1] > model.config.num_quantizers:
        raise DataError(f"{args.input}: codes must be 0..{model.config.codebook_size - 1} in at most "
                        f"{model.config.num_quantizers} levels for this codec, got {codes.shape[1]} levels in "
                        f"{codes.min()}..{codes.max()}")
    device = next(model.parameters()).device
    y = model.decode(torch.from_numpy(codes.astype(np.int64))[None].to(device))[0]
    if args.official_gain:
        y = official_output(y)
    out = args.out or Path(str(args.input).removesuffix(".npy").removesuffix(".codes") + ".decoded.wav")
    write_audio(out, y.cpu().numpy(), subtype="FLOAT" if str(out).endswith(".wav") else None)
    print(f"{out}: {y.shape[0] / SAMPLE_RATE:.2f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codec", help="SpectroStream codec: encode audio to codes, decode codes to audio")
    cmds = p.add_subparsers(dest="codec_command", required=True)
    enc = cmds.add_parser("encode", help="audio file -> codes .npy (int32 [frames, levels])")
    enc.add_argument("input", type=Path)
    enc.add_argument("-o", "--out", type=Path, help="codes file (default IN.codes.npy)")
    enc.add_argument("--levels", type=int, default=12, help="RVQ levels to keep (default 12, as the LM uses)")
    add_codec_args(enc)
    add_device_args(enc)
    enc.set_defaults(func=_encode)
    dec = cmds.add_parser("decode", help="codes .npy -> audio (WAV as float, or FLAC)")
    dec.add_argument("input", type=Path)
    dec.add_argument("-o", "--out", type=Path, help="audio file (default IN.decoded.wav)")
    dec.add_argument(
        "--official-gain", action="store_true", help="apply the official API's 0.5 gain and int16 rounding"
    )
    add_codec_args(dec)
    add_device_args(dec)
    dec.set_defaults(func=_decode)

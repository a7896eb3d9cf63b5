"""``openmrt train ...``: one subcommand per trainable model."""

from __future__ import annotations

import argparse


def _lm(args: argparse.Namespace) -> int:
    from openmrt.train.lm import train

    train(args)
    return 0


def _codec(args: argparse.Namespace) -> int:
    from openmrt.train.codec import train

    train(args)
    return 0


def _codec2(args: argparse.Namespace) -> int:
    from openmrt.train.codec2 import train

    train(args)
    return 0


def _codec2_gain(args: argparse.Namespace) -> int:
    from openmrt.train.codec2 import run_calibrate

    run_calibrate(args)
    return 0


def _style(args: argparse.Namespace) -> int:
    from openmrt.train.style import train

    train(args)
    return 0


def _mapper(args: argparse.Namespace) -> int:
    from openmrt.train.mapper import train

    train(args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from openmrt.train import codec, lm

    t = sub.add_parser("train", help="train or fine-tune models").add_subparsers(dest="what", required=True)
    p = t.add_parser("lm", help="train / fine-tune the language model on token shards")
    lm.add_arguments(p)
    p.set_defaults(func=_lm)
    p = t.add_parser("codec", help="train the SpectroStream-architecture codec on audio shards")
    codec.add_arguments(p)
    p.set_defaults(func=_codec)
    from openmrt.train import codec2 as codec2_args

    p = t.add_parser("codec2", help="train the demo codec v2 (harmonic magnitudes + RTPGHI phase) on shards")
    codec2_args.add_arguments(p)
    p.set_defaults(func=_codec2)
    p = t.add_parser("codec2-gain", help="fit a codec v2 file's output EQ on its training clips (after training)")
    codec2_args.add_gain_arguments(p)
    p.set_defaults(func=_codec2_gain)
    from openmrt.train import mapper as mapper_args
    from openmrt.train import style as style_args

    p = t.add_parser("style", help="train our style model (audio/text towers, contrastive) and fit its RVQ")
    style_args.add_arguments(p)
    p.set_defaults(func=_style)
    p = t.add_parser("mapper", help="train the pMF text -> audio embedding mapper of a style model")
    mapper_args.add_arguments(p)
    p.set_defaults(func=_mapper)

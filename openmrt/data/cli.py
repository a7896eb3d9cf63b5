"""``openmrt data``: compose, ingest, drumless, tokenize, show (style tokens: ``openmrt style tokens``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def register(sub) -> None:
    from openmrt.codec.checkpoint import add_codec_args
    from openmrt.device import add_device_args

    data = sub.add_parser("data", help="build training data: composed music, a user's folder, tokens, pictures")
    cmds = data.add_subparsers(dest="data_command", required=True)

    p = cmds.add_parser("compose", help="compose, render and label music into shards")
    p.add_argument("--hours", type=float, required=True, help="about this much audio (e.g. 0.1)")
    p.add_argument("-o", "--out", required=True, help="shard folder (rerun the same command to resume)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pieces-per-shard", type=int, default=4)
    p.set_defaults(func=_compose)

    p = cmds.add_parser("ingest", help="shards from a folder of audio (transcribed) and MIDI (rendered) files")
    p.add_argument("folder")
    p.add_argument("-o", "--out", required=True, help="shard folder (rerun the same command to resume)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--files-per-shard", type=int, default=8)
    p.add_argument("--style", default="", help="style tag for every file (e.g. the artist or genre)")
    p.add_argument("--caption", default="", help="caption for every audio file (default: the style tag)")
    p.set_defaults(func=_ingest)

    p = cmds.add_parser("tokenize", help="add 12-level codec tokens to a shard folder")
    p.add_argument("folder")
    add_codec_args(p)
    p.add_argument("--levels", type=int, default=12)
    p.add_argument("--out", help="write token-only copies of the shards here, tokens encoded afresh (the audio is "
                                 "not copied): an LM's data after the codec changed; resumable")
    add_device_args(p)
    p.set_defaults(func=_tokenize)

    p = cmds.add_parser("drumless", help="drumless twins of composed examples (mix minus drum stem, drums flag 0)")
    p.add_argument("folder", help="a composed shard folder (it keeps the drum stems)")
    p.add_argument("-o", "--out", required=True, help="shard folder for the twins (then tokenize it)")
    p.add_argument("--skip", type=int, default=0, help="leave out the first N examples (a trainer's --holdout)")
    p.set_defaults(func=_drumless)

    p = cmds.add_parser("show", help="PNG of one example: spectrogram, piano roll, drum flag")
    p.add_argument("shard", help="a shard_NNNNN.npz file")
    p.add_argument("-o", "--out", default="example.png")
    p.add_argument("--example", type=int, default=0)
    p.add_argument("--seconds", type=float, default=20.0, help="how much to draw (0: all)")
    p.set_defaults(func=_show)


def _report(stats: dict) -> None:
    speed = stats["seconds"] / stats["cpu_s"] if stats.get("cpu_s") else 0.0
    index = stats["index"]
    print(f"built {stats['built']} shard(s), kept {stats['skipped_existing']} already built; "
          f"folder now holds {index['examples']} examples, {index['seconds'] / 3600:.3f} h. "
          f"This run: {stats['seconds']:.0f} s of audio in {stats['wall_s']:.0f} s wall, "
          f"{speed:.1f} s of audio per CPU-second.")


def _compose(args: argparse.Namespace) -> int:
    from openmrt.data.pipeline import compose_dataset

    _report(compose_dataset(args.out, args.hours, args.seed, args.workers, args.pieces_per_shard))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from openmrt.data.pipeline import ingest_folder

    stats = ingest_folder(args.folder, args.out, args.workers, args.files_per_shard, args.style, args.caption)
    _report(stats)
    for name, why in stats["skipped"]:
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"summary: {stats['ingested']} file(s) ingested, {len(stats['skipped'])} skipped")
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from openmrt.codec.checkpoint import load_codec
    from openmrt.data.shards import read_index
    from openmrt.data.tokenize import retokenize_folder, tokenize_folder
    from openmrt.device import resolve_device

    read_index(args.folder)  # a bad folder fails before a model loads
    model = load_codec(args.codec, resolve_device(args.device), args.encoder, need_encoder=True)
    name = Path(args.codec or "demo").name
    if args.out:
        stats = retokenize_folder(args.folder, args.out, model, args.levels, name)
        print(f"retokenized {stats['tokenized']} shard(s) into {args.out}; {stats['already']} were there already")
    else:
        stats = tokenize_folder(args.folder, model, args.levels, name)
        print(f"tokenized {stats['tokenized']} shard(s); {stats['already']} had tokens already")
    return 0


def _drumless(args: argparse.Namespace) -> int:
    from openmrt.data.drumless import drumless_folder

    stats = drumless_folder(args.folder, args.out, args.skip)
    print(f"wrote {stats['shards']} shard(s), {stats['twins']} drumless twin(s); {args.out} now holds "
          f"{stats['index']['examples']} examples, {stats['index']['seconds'] / 3600:.3f} h. "
          f"Next: openmrt data tokenize {args.out} --codec ..., openmrt style tokens {args.out} ...")
    return 0


def _show(args: argparse.Namespace) -> int:
    from openmrt.data.show import show_example

    out = show_example(args.shard, args.out, args.example, args.seconds or None)
    print(f"wrote {out}")
    return 0

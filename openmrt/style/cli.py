"""``openmrt style embed`` (text or audio -> the 12 style tokens), ``openmrt style tokens`` (a shard folder's
per-frame style tokens, the LM's style input) and ``openmrt style eval`` (held-out figures).

``--style`` names the style model everywhere (as in ``openmrt generate``): demo, musiccoca or a file."""

from __future__ import annotations

import argparse
import json
import sys

from openmrt.errors import ConfigError

STYLE_HELP = "demo (our shipped style model, the default), musiccoca (official files) or a style .safetensors"


def _source(args: argparse.Namespace):
    from openmrt.device import resolve_device

    device = resolve_device(args.device)
    if args.style is None:
        print("openmrt: style model demo (the shipped demo style model)", file=sys.stderr)
    if args.style == "musiccoca":
        from openmrt.style.musiccoca import MusicCoCa

        if device.type != "cpu":
            print("openmrt: MusicCoCa runs on the CPU (TFLite)", file=sys.stderr)
        return MusicCoCa(use_mapper=False if args.no_mapper else None, seed=args.seed)
    from openmrt.style.model import StyleModel

    return StyleModel.load(None if args.style in (None, "demo") else args.style,
                           use_mapper=False if args.no_mapper else None, seed=args.seed).to(device)


def cmd_embed(args: argparse.Namespace) -> int:
    from openmrt.audio import read_audio

    if (args.text is None) == (args.audio is None):
        raise ConfigError("style embed: give exactly one of --text or --audio")
    src = _source(args)
    emb = src.embed_text(args.text) if args.text is not None else src.embed_audio(read_audio(args.audio))
    toks = src.tokenize(emb)
    print(",".join(str(t) for t in toks))
    if args.embedding:
        print(json.dumps([round(float(x), 6) for x in emb]))
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from openmrt.data.tokenize import style_tokenize_folder
    from openmrt.device import resolve_device
    from openmrt.style import load_style
    from openmrt.style.model import StyleModel

    if args.style is None:
        print("openmrt: style model demo (the shipped demo style model)", file=sys.stderr)
    style = load_style(args.style or "demo")
    if isinstance(style, StyleModel):
        style.to(resolve_device(args.device))
    stats = style_tokenize_folder(args.folder, style, args.window, args.hop, style.name)
    print(f"added style tokens to {stats['tokenized']} shard(s); {stats['already']} had them already")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from openmrt.style.data import load_examples
    from openmrt.style.evaluate import evaluate
    from openmrt.style.model import StyleModel

    torch.set_num_threads(args.threads)
    model = StyleModel.load(None if args.style == "demo" else args.style)
    res = evaluate(model, load_examples(args.data, cache=args.cache))
    text = json.dumps(res, indent=1)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from openmrt.device import add_device_args

    s = sub.add_parser("style", help="style model: prompts to tokens, shard style tokens, evaluation")
    s = s.add_subparsers(dest="style_cmd", required=True)
    e = s.add_parser("embed", help="print the 12 style tokens of a text or an audio file")
    e.add_argument("--text")
    e.add_argument("--audio", metavar="FILE")
    e.add_argument("--style", help=STYLE_HELP)
    e.add_argument("--no-mapper", action="store_true", help="plain text embedding (no text -> audio mapper)")
    e.add_argument("--seed", type=int, default=0, help="mapper noise seed (default 0, as the official engine)")
    e.add_argument("--embedding", action="store_true", help="also print the embedding (JSON list)")
    add_device_args(e)
    e.set_defaults(func=cmd_embed)
    t = s.add_parser("tokens", help="add the LM's per-frame style tokens to a shard folder (style model over the "
                                    "audio around each hop)")
    t.add_argument("folder")
    t.add_argument("--style", help=STYLE_HELP)
    t.add_argument("--window", type=float, default=10.0, help="seconds of audio around each hop")
    t.add_argument("--hop", type=int, default=25, help="frames per style update (25 = 1 s)")
    add_device_args(t)
    t.set_defaults(func=cmd_tokens)
    v = s.add_parser("eval", help="held-out retrieval and RVQ round-trip figures of our style model")
    v.add_argument("--data", action="append", required=True, help="held-out shard folder (repeatable)")
    v.add_argument("--style", default="demo", help="demo or a style .safetensors")
    v.add_argument("--cache", help="folder for cached log-mels")
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("-o", "--out", help="also write the JSON here")
    v.set_defaults(func=cmd_eval)

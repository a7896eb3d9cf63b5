"""``openmrt style embed`` (text or audio -> the 12 style tokens) and ``openmrt style eval`` (held-out figures)."""

from __future__ import annotations

import argparse
import json

from openmrt.errors import ConfigError

MODEL_HELP = "demo (our shipped style model), musiccoca (official files) or a style .safetensors (default demo)"


def _source(args: argparse.Namespace):
    if args.model == "musiccoca":
        from openmrt.style.musiccoca import MusicCoCa

        return MusicCoCa(use_mapper=False if args.no_mapper else None, seed=args.seed)
    from openmrt.style.model import StyleModel

    return StyleModel.load(None if args.model == "demo" else args.model,
                           use_mapper=False if args.no_mapper else None, seed=args.seed)


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


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from openmrt.style.data import load_examples
    from openmrt.style.evaluate import evaluate
    from openmrt.style.model import StyleModel

    torch.set_num_threads(args.threads)
    model = StyleModel.load(None if args.model == "demo" else args.model)
    res = evaluate(model, load_examples(args.data, cache=args.cache))
    print(json.dumps(res, indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("style", help="style model: prompts to tokens, evaluation").add_subparsers(dest="style_cmd",
                                                                                                  required=True)
    e = s.add_parser("embed", help="print the 12 style tokens of a text or an audio file")
    e.add_argument("--text")
    e.add_argument("--audio", metavar="FILE")
    e.add_argument("--model", default="demo", help=MODEL_HELP)
    e.add_argument("--no-mapper", action="store_true", help="plain text embedding (no text -> audio mapper)")
    e.add_argument("--seed", type=int, default=0, help="mapper noise seed (default 0, as the official engine)")
    e.add_argument("--embedding", action="store_true", help="also print the embedding (JSON list)")
    e.set_defaults(func=cmd_embed)
    v = s.add_parser("eval", help="held-out retrieval and RVQ round-trip figures of our style model")
    v.add_argument("--data", action="append", required=True, help="held-out shard folder (repeatable)")
    v.add_argument("--model", default="demo", help="demo or a style .safetensors")
    v.add_argument("--cache", help="folder for cached log-mels")
    v.add_argument("--threads", type=int, default=1)
    v.set_defaults(func=cmd_eval)

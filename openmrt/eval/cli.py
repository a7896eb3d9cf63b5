"""``openmrt eval lm``: the LM figures of openmrt/eval/lm.py for a bundle on held-out shards."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from openmrt.eval import lm

    e = sub.add_parser("eval", help="evaluate models on held-out data").add_subparsers(dest="what", required=True)
    p = e.add_parser("lm", help="note-onset and pitch-class F1 vs ceiling, drums-off ratio, style top-1")
    lm.add_arguments(p)
    p.set_defaults(func=_lm)


def _lm(args: argparse.Namespace) -> int:
    from openmrt.eval import lm

    lm.run(args)
    return 0

"""The ``openmrt`` command. Each command group lives beside the code it drives and exposes
``register(subparsers)``; this file only assembles them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from openmrt.errors import OpenMRTError

MODULES = [
    "openmrt.engine.cli",  # generate, play, devices
    "openmrt.codec.cli",  # codec ...
    "openmrt.data.cli",  # data ...
    "openmrt.train.cli",  # train ...
    "openmrt.style.cli",  # style embed, style tokens, style eval
    "openmrt.eval.cli",  # eval lm, eval codec, eval roundtrip
    "openmrt.hub_cli",  # models list|download|verify
    "openmrt.server.cli",  # serve
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmrt", description="Open live music model.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in MODULES:
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as e:  # a command group this version does not have yet
            if e.name != module:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except OpenMRTError as e:
        print(f"openmrt: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

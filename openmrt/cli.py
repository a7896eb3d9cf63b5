"""The ``openmrt`` command. Each command group lives beside the code it drives and exposes
``register(subparsers)``; this file only assembles them."""

from __future__ import annotations

import argparse
import importlib
import sys

from openmrt.errors import OpenMRTError

# (command, module with register(subparsers)); imported only when the command is used.
COMMANDS = {
    "data": "openmrt.data.cli",
    "codec": "openmrt.codec.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmrt", description="Open live music model.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"({name} commands)")
            continue
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            sub.add_parser(name, help=f"({name}: not available in this version)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.parse_args([args.command, "--help"])
        return 2
    try:
        return int(args.func(args) or 0)
    except OpenMRTError as e:
        print(f"openmrt: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

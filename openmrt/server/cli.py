"""``openmrt serve``: play the model from a web page (docs/server.md)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from openmrt.device import add_device_args
from openmrt.engine.session import BUFFER_PRESETS
from openmrt.errors import ConfigError

DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def resolve_token(host: str, token: str | None) -> str | None:
    """The token every WebSocket must bring: the given one; a new one when listening beyond this machine."""
    from openmrt.server.app import new_token

    if token is not None and len(token) < 8:
        raise ConfigError("--token: use at least 8 characters (or leave it out and one is generated)")
    if token is None and not is_loopback(host):
        return new_token()  # reachable from the network: never open without a token
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from openmrt.engine.cli import choose_style, load_model
    from openmrt.server.app import Server

    if args.max_players < 1:
        raise ConfigError(f"--max-players must be at least 1, got {args.max_players}")
    token = resolve_token(args.host, args.token)
    bundle = load_model(args)
    server = Server(bundle, choose_style(bundle, args.style, needed=False), max_players=args.max_players,
                    token=token, buffer_samples=args.buffer)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"openmrt: serving {bundle.name} for up to {args.max_players} players (one batch): open {url}",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning", ws_max_size=65536)
    finally:
        server.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from openmrt.engine.cli import DEFAULT_MODEL, MODEL_HELP

    s = sub.add_parser("serve", help="play live from a web page (one WebSocket per player)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default local only; any other needs a token, generated if not given)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--token", help="secret every page must bring (?token=...); required beyond 127.0.0.1")
    s.add_argument("--max-players", type=int, default=4,
                   help="players at once (seats of one batch: each costs a row of every frame)")
    s.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    s.add_argument("--style", help="style model for prompts: demo, musiccoca or a file (default: as for play)")
    s.add_argument("--buffer", type=int, default=4096, choices=BUFFER_PRESETS,
                   help="server-side lead in samples (more: fewer dropped frames, more latency)")
    add_device_args(s)
    s.set_defaults(func=cmd_serve)

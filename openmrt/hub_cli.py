"""``openmrt models list|download|verify``: what is installed where, fetching, checking."""

from __future__ import annotations

import argparse
from pathlib import Path

from openmrt import hub


def _spec(name: str) -> hub.BundleSpec:
    specs = hub.registry()
    if name not in specs:
        raise hub.HubError(f"no bundle {name!r}; choose one of {', '.join(specs)}")
    return specs[name]


RANDOM_LINE = ("random:tiny plays         random weights: NOISE, at a safe level (about -26 dBFS), for trying the "
               "engine with nothing installed; LM tiny, codec demo (random too)")


def format_list(search: list[Path] | None = None) -> str:
    """The text of ``models list``: what plays (random:tiny included, as noise), then every bundle, its files
    (found where, or missing), sizes, licence."""
    lines = []
    for spec in hub.registry().values():
        found = hub.locate(spec, search)
        if hub.is_installed(spec, search):
            state = "plays"
        elif spec.shipped:
            state = "partly shipped"
        else:
            state = "not installed"
        if spec.shipped:
            where = ("ships inside the package" if state == "plays" else
                     f"the package ships its {hub.shipped_parts(spec)} only; the {spec.name} LM is not trained yet")
        else:
            where = f"download >= {hub.human(spec.approx_bytes)}: `openmrt models download {spec.name}`"
        lines.append(f"{spec.name:<11} {state:<14} {spec.description} ({where}; LM {spec.lm_preset}, "
                     f"codec {spec.codec_preset})")
        for f in spec.files:
            p = found[f.path]
            size = hub.human(p.stat().st_size) if p else f"~{hub.human(f.approx_bytes)}" if f.approx_bytes else ""
            size = "folder" if p and p.is_dir() else size
            status = str(p) if p else "missing" + ("" if f.required else " (optional)")
            lines.append(f"  {f.path:<55} {size:>9}  {f.role:<25} {status}")
        lines.append(f"  licence {spec.licence}: {spec.attribution}")
        lines.append("")
    lines.append(RANDOM_LINE)
    lines.append("")
    lines.append("searched (in order): " + ", ".join(str(r) for r in (search or hub.roots()))
                 + f"; demo files in {hub.DEMO_DIR}")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    print(format_list())
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from openmrt.hub_download import download, pick_fetch

    spec = _spec(args.name)
    root = Path(args.to).expanduser() if args.to else hub.roots()[0]
    print(f"openmrt: {spec.name} -> {root}\n  licence {spec.licence}: {spec.attribution}")
    paths = download(spec, root, pick_fetch(args.source), search=hub.roots(), required_only=args.required_only,
                     archive_fetch=pick_fetch(args.source, v1=True))
    for rel, p in paths.items():
        print(f"  ok {rel}: {p}")
    if root not in hub.roots():
        print(f"openmrt: {root} is not searched by default: set OPENMRT_HOME={root} or pass --model {root}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    spec = _spec(args.name)
    paths = hub.verify(spec, full=True)
    for f in spec.files:
        p = paths.get(f.path)
        print(f"  {'ok' if p else '--'} {f.path}: {p or 'missing (optional)'}")
    print(f"openmrt: {spec.name} verified (sizes, safetensors headers, keys and shapes, sha256 in {hub.RECORD})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="model bundles: list, download, verify")
    msub = p.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="installed bundles, where, sizes, licence").set_defaults(func=cmd_list)
    d = msub.add_parser("download", help="fetch an official bundle (Hugging Face or GCS; resumes)")
    d.add_argument("name")
    d.add_argument("--to", help="root folder (default: $OPENMRT_HOME if set, else $MAGENTA_HOME/magenta-rt-v2)")
    d.add_argument("--source", choices=["hf", "gcs"], help="default $MAGENTA_RT_DOWNLOAD_SOURCE or hf")
    d.add_argument("--required-only", action="store_true", help="only the checkpoint (no encoder, no MusicCoCa)")
    d.set_defaults(func=cmd_download)
    v = msub.add_parser("verify", help="check sizes, headers, keys, shapes and sha256 of a bundle's files")
    v.add_argument("name")
    v.set_defaults(func=cmd_verify)

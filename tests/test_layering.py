"""Dependencies point one way: no module imports from a layer above its own.

Layers, low to high (a module may import its own layer's package and any lower layer):

0. core: the top-level modules ``openmrt/*.py`` (errors, frame, device, weights, spectral, streaming, config,
   tokens, controls, audio, ...), except the entry points and the model-file modules below;
1. ``lm``, ``codec``, ``io``: the models and the devices; independent of one another;
2. ``hub``, ``hub_download`` (hub's download half): model files (where they live, download, verify). Above
   lm/codec because checking an official checkpoint reads its shapes through their converters; below style because
   MusicCoCa finds its files here;
3. ``style``, ``data``: ``style`` may import ``data`` (its training examples are data's shards), never the reverse
   (issue 17 named data -> style as an upward import);
4. ``engine``: the live session;
5. ``server`` (players over WebSockets, on the engine), ``eval`` (independent of each other);
6. ``train``;
7. entry points: ``openmrt/cli.py``, ``openmrt/__main__.py``, ``openmrt/hub_cli.py`` and every package's ``cli.py``
   may import anything.

Between different packages of one layer only the imports listed in ``SAME_LAYER`` are allowed. Every import
counts: module level, inside functions, under ``TYPE_CHECKING``, ``from openmrt import x`` (= ``openmrt.x``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import openmrt

LAYERS = {"lm": 1, "lm_v1": 1, "codec": 1, "io": 1, "hub": 2, "hub_download": 2, "style": 3, "data": 3, "engine": 4,
          "server": 5, "eval": 5, "train": 6}
ENTRY = 7
SAME_LAYER = {("style", "data"), ("hub_download", "hub")}  # (importer, imported) pairs allowed within a layer
TOP_ENTRY_POINTS = {"cli", "__main__", "hub_cli"}


def unit(module: str) -> str:
    """The layering unit of a dotted module name: its package (``lm``) or top-level module (``config``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str, is_package_cli: bool = False) -> int:
    u = unit(module)
    if is_package_cli or (u in TOP_ENTRY_POINTS and module.count(".") == 1):
        return ENTRY
    return LAYERS.get(u, 0)


def imports(path: Path, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported openmrt module, line) for every import in a file, wherever it sits."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base == "openmrt":  # from openmrt import hub -> openmrt.hub
                out += [(f"openmrt.{a.name}", node.lineno) for a in node.names]
            else:
                out.append((base, node.lineno))
    return [(m, line) for m, line in out if m.startswith("openmrt.")]


def violations(root: Path) -> list[str]:
    """Every upward (or disallowed same-layer) import under the package folder ``root``."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        here = layer(module, is_package_cli=rel.name == "cli" and len(rel.parts) > 2)
        for target, line in imports(path, module, is_package):
            there, a, b = layer(target), unit(module), unit(target)
            if a == b or here == ENTRY:
                continue
            if there > here or (there == here and here > 0 and (a, b) not in SAME_LAYER):
                bad.append(f"{path.relative_to(root.parent)}:{line}: {module} (layer {here}) imports {target} "
                           f"(layer {there})")
    return bad


def test_no_module_imports_from_a_layer_above_it():
    bad = violations(Path(openmrt.__file__).parent)
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_check_catches_upward_and_sideways_imports(tmp_path):
    """The rule itself, on a made-up package: each kind of violation is reported, the allowed imports are not."""
    pkg = tmp_path / "openmrt"
    files = {
        "config.py": "from openmrt.errors import ConfigError\n",  # core -> core: fine
        "frame.py": "def f():\n    from openmrt.lm import model\n",  # core -> lm, inside a function: upward
        "cli.py": "from openmrt.train import lm\n",  # the top entry point: anything
        "codec/__init__.py": "",
        "codec/cli.py": "from openmrt.eval import codec\n",  # a package's cli: anything
        "codec/model.py": "from openmrt import hub\nfrom openmrt.io import midi\n",  # up to hub; sideways to io
        "data/tokenize.py": "from ..style import load_style\n",  # relative, sideways the forbidden way
        "style/data.py": "from openmrt.data.shards import load_shard\n",  # the allowed sideways import
        "train/lm.py": "from openmrt.eval.codec import evaluate_codec\n",  # downward
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = sorted(v.split(": ", 1)[0] for v in violations(pkg))
    assert found == ["openmrt/codec/model.py:1", "openmrt/codec/model.py:2", "openmrt/data/tokenize.py:1",
                     "openmrt/frame.py:2"]

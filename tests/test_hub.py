"""Model files (openmrt.hub): search order, verification, offline instructions, resumed downloads, loading.

A fake hub in the official layout is made here: the golden tiny LM params plus a narrow codec's
decoder/codebook in ``checkpoints/tiny.safetensors`` and its encoder in
``resources/spectrostream/encoder.safetensors``. Nothing touches the network.
"""

from __future__ import annotations

import functools
import io
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from openmrt import hub
from openmrt.engine.bundle import bundle_from_spec, load_bundle
from openmrt.errors import ConfigError
from openmrt.hub_download import download, fetch_gcs

CKPT = "checkpoints/tiny.safetensors"
ENC = "resources/spectrostream/encoder.safetensors"
SPEC = hub.official_spec("tiny", lm_preset="tiny", codec_preset="narrow")  # the clean test-size registry entry


@pytest.fixture(scope="module")
def source(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete official-layout root (read it, copy it; do not modify it)."""
    from openmrt.codec.convert import to_official
    from openmrt.codec.model import SpectroStream
    from openmrt.config import codec_config

    root = tmp_path_factory.mktemp("remote")
    torch.manual_seed(0)
    codec = SpectroStream(codec_config("narrow"))
    flat = load_file(str(golden_dir / "tiny_params.safetensors")) | to_official(codec, ("decoder", "quantizer"))
    (root / "checkpoints").mkdir()
    save_file(flat, str(root / CKPT))
    (root / ENC).parent.mkdir(parents=True)
    save_file(to_official(codec, ("encoder",)), str(root / ENC))
    return root


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty OPENMRT_HOME unset and MAGENTA_HOME pointing at an empty folder: a fresh machine."""
    monkeypatch.delenv("OPENMRT_HOME", raising=False)
    monkeypatch.setenv("MAGENTA_HOME", str(tmp_path / "magenta"))
    return tmp_path


def _install(source: Path, root: Path, files: tuple[str, ...] = (CKPT, ENC)) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / rel, root / rel)
    return root


def test_found_in_magenta_home_and_loads(source: Path, env: Path, golden_dir: Path) -> None:
    root = _install(source, env / "magenta" / "magenta-rt-v2")
    assert hub.roots() == [root]
    assert hub.locate(SPEC)[CKPT] == root / CKPT
    assert hub.is_installed(SPEC)
    bundle = bundle_from_spec(SPEC)
    golden = load_file(str(golden_dir / "tiny_params.safetensors"))
    want = golden["params/depthformer/decoder/decoder_embedding/embedding/embedding"]
    assert torch.equal(bundle.lm.embedding.weight, want)
    assert (root / hub.RECORD).is_file()  # sha256 recorded after the first verification


def test_openmrt_home_comes_first(source: Path, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(source, env / "magenta" / "magenta-rt-v2")
    home = _install(source, env / "home", (CKPT,))
    monkeypatch.setenv("OPENMRT_HOME", str(home))
    found = hub.locate(SPEC)
    assert found[CKPT] == home / CKPT
    assert found[ENC] == env / "magenta" / "magenta-rt-v2" / ENC  # per file: the rest still comes from MAGENTA_HOME
    assert set(hub.verify(SPEC)) == {CKPT, ENC}


def test_encoder_next_to_checkpoint_quirk(source: Path, env: Path) -> None:
    root = _install(source, env / "magenta" / "magenta-rt-v2", (CKPT,))
    shutil.copy(source / ENC, root / "checkpoints" / "encoder.safetensors")
    assert hub.locate(SPEC)[ENC] == root / "checkpoints" / "encoder.safetensors"


def test_truncated_file_is_named(source: Path, env: Path) -> None:
    root = _install(source, env / "magenta" / "magenta-rt-v2")
    data = (root / CKPT).read_bytes()
    (root / CKPT).write_bytes(data[: len(data) // 2])
    with pytest.raises(hub.HubError, match="truncated") as e:
        hub.verify(SPEC)
    assert str(root / CKPT) in str(e.value)


def test_wrong_shape_names_the_key(source: Path, env: Path) -> None:
    root = _install(source, env / "magenta" / "magenta-rt-v2")
    flat = load_file(str(root / CKPT))
    key = "params/depthformer/decoder/depth_body/to_logits/kernel"
    flat[key] = flat[key][:, :-1].contiguous()
    save_file(flat, str(root / CKPT))
    with pytest.raises(hub.HubError, match=key):
        hub.verify(SPEC)
    with pytest.raises(hub.HubError, match=key):  # a PATH names the key too
        load_bundle(str(root / CKPT))


def test_changed_file_fails_its_recorded_sha256(source: Path, env: Path) -> None:
    root = _install(source, env / "magenta" / "magenta-rt-v2")
    hub.verify(SPEC)
    data = bytearray((root / ENC).read_bytes())
    data[-1] ^= 0xFF  # same size, new mtime: only the hash can tell
    (root / ENC).write_bytes(bytes(data))
    with pytest.raises(hub.HubError, match="sha256"):
        hub.verify(SPEC)


def test_missing_files_say_what_to_fetch(env: Path) -> None:
    with pytest.raises(hub.HubError) as e:
        hub.verify(SPEC)
    msg = str(e.value)
    assert hub.HF_URL + CKPT in msg and hub.GCS_URL + CKPT in msg
    assert str(env / "magenta" / "magenta-rt-v2" / CKPT) in msg


def test_offline_download_gives_instructions(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    dest = env / "dl"
    with pytest.raises(hub.HubError) as e:
        download(SPEC, dest, required_only=True)
    msg = str(e.value)
    assert "cannot download " + CKPT in msg
    assert hub.HF_URL + CKPT in msg and hub.GCS_URL + CKPT in msg and str(dest / CKPT) in msg


class _FakeBucket:
    """Serves files from a local folder the way GCS answers a (Range) GET."""

    def __init__(self, root: Path):
        self.root, self.ranges = root, []

    def __call__(self, req, timeout: float = 0):
        data = (self.root / req.full_url.removeprefix(hub.GCS_URL)).read_bytes()
        rng = req.get_header("Range")
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.ranges.append(start)
        resp = io.BytesIO(data[start:])
        resp.status, resp.headers = (206 if rng else 200), {"Content-Length": str(len(data) - start)}
        return resp


def test_interrupted_download_resumes(source: Path, env: Path) -> None:
    dest = env / "dl"
    remote = (source / CKPT).read_bytes()
    partial = dest / (CKPT + ".tmp")  # where an interrupted GCS download (ours or the official app's) stops
    partial.parent.mkdir(parents=True)
    partial.write_bytes(remote[: len(remote) // 3])
    bucket = _FakeBucket(source)
    paths = download(SPEC, dest, functools.partial(fetch_gcs, urlopen=bucket), required_only=True)
    assert paths[CKPT] == dest / CKPT and (dest / CKPT).read_bytes() == remote
    assert bucket.ranges == [len(remote) // 3] and not partial.exists()  # only the rest was asked for
    # Already there and sound: nothing is fetched again.
    download(SPEC, dest, functools.partial(fetch_gcs, urlopen=bucket), required_only=True)
    assert bucket.ranges == [len(remote) // 3]
    # Corrupted after it was verified: its recorded sha256 fails, it is fetched whole and recorded afresh.
    data = bytearray(remote)
    data[-1] ^= 0xFF
    (dest / CKPT).write_bytes(bytes(data))
    download(SPEC, dest, functools.partial(fetch_gcs, urlopen=bucket), required_only=True)
    assert bucket.ranges == [len(remote) // 3, 0] and (dest / CKPT).read_bytes() == remote
    hub.verify(SPEC, [dest], full=True)


def test_path_bundle_detects_presets(source: Path, env: Path) -> None:
    root = _install(source, env / "fakehub")
    bundle = load_bundle(str(root))  # an official-layout root with one checkpoint
    assert bundle.lm.cfg.name == "tiny" and bundle.codec.config.name == "narrow"


def test_unknown_model(env: Path) -> None:
    # ``auto`` on every kind of machine is tested in test_bundle_auto.py (GPU and installed bundles injected).
    with pytest.raises(ConfigError, match="models list"):
        load_bundle("no_such_bundle")


def test_models_list_on_a_fresh_machine(env: Path, capsys: pytest.CaptureFixture) -> None:
    from openmrt.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "mrt2_small", "mrt2_base"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert name == "demo" or "not installed" in line
    assert "~1.13 GB" in out and "~9.84 GB" in out
    assert "CC-BY-4.0" in out and "google/magenta-realtime-2" in out
    assert hub.attribution("mrt2_base").startswith("CC-BY-4.0")

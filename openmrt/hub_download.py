"""Downloading official bundle files, only when the user asks (``openmrt models download NAME``).

Two sources, as in the official app (shared/spec/musiccoca_assets_api.md §2.2; pick one with
``MAGENTA_RT_DOWNLOAD_SOURCE=hf|gcs`` or ``--source``):

* ``hf`` (default): ``huggingface_hub.hf_hub_download(local_dir=root)``, so the local tree mirrors
  the repo tree. The library resumes its own partial files (kept under ``root/.cache/huggingface``,
  also those the official app left there) and shows a progress bar; ``HF_TOKEN`` is honoured.
* ``gcs``: plain HTTPS from the public bucket into ``<file>.tmp`` (the official GCS downloader's
  temporary name), resumed with an HTTP Range request and renamed when complete.

A v1 bundle's LM is a T5X checkpoint folder, published as ``checkpoints/<name>.tar`` in the v1 repo
(``google/magenta-realtime``, or its bucket): the archive is fetched the same way, unpacked into
``<name>.extracting`` beside it (tarfile's "data" filter: no links or paths out of the folder), renamed
to ``checkpoints/<name>/`` once whole, and then deleted.

Any failure (offline, ``HF_HUB_OFFLINE=1``, no such file) becomes a HubError that lists what to
fetch from where and where to put it.
"""

from __future__ import annotations

import functools
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from openmrt.errors import CheckpointError
from openmrt.hub import (
    GCS_URL,
    REPO_ID,
    V1_GCS_URL,
    V1_REPO_ID,
    BundleSpec,
    HubError,
    HubFile,
    forget,
    locate,
    missing_message,
    t5x_folder,
    verify_file,
)

Fetch = Callable[[str, Path], Path]  # (repo path, destination root) -> local file


def fetch_hf(rel: str, root: Path, repo_id: str = REPO_ID) -> Path:
    """One file from the Hugging Face repo into ``root/rel`` (resumes, progress bar)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, rel, local_dir=root))


def fetch_gcs(rel: str, root: Path, urlopen: Callable = urllib.request.urlopen, base: str = GCS_URL) -> Path:
    """One file from the public GCS bucket (``base``) into ``root/rel``, resuming ``<file>.tmp`` if present."""
    from tqdm import tqdm

    final = root / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + ".tmp")
    have = tmp.stat().st_size if tmp.is_file() else 0
    req = urllib.request.Request(base + rel, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urlopen(req, timeout=30)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left past our partial: it is already whole
            os.replace(tmp, final)
            return final
        raise
    with resp:
        if have and getattr(resp, "status", 200) != 206:  # the server ignored the range: start over
            have = 0
        rest = int(resp.headers.get("Content-Length") or 0)
        with open(tmp, "ab" if have else "wb") as out, tqdm(
            total=have + rest or None, initial=have, unit="B", unit_scale=True, desc=Path(rel).name
        ) as bar:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
    os.replace(tmp, final)
    return final


def pick_fetch(source: str | None = None, v1: bool = False) -> Fetch:
    """The fetcher of ``source`` (hf or gcs); ``v1``: from the v1 repo and bucket (its T5X archives)."""
    source = (source or os.environ.get("MAGENTA_RT_DOWNLOAD_SOURCE") or "hf").lower()
    if source not in ("hf", "gcs"):
        raise HubError(f"unknown download source {source!r}: use hf or gcs")
    if source == "hf":
        return functools.partial(fetch_hf, repo_id=V1_REPO_ID) if v1 else fetch_hf
    return functools.partial(fetch_gcs, base=V1_GCS_URL) if v1 else fetch_gcs


def download(spec: BundleSpec, root: Path, fetch: Fetch | None = None, search: list[Path] | None = None,
             required_only: bool = False, archive_fetch: Fetch | None = None) -> dict[str, Path]:
    """Fetch the files of ``spec`` that are not already present and sound, into ``root``; verify each.
    ``archive_fetch`` fetches v1's T5X archives (default: the v1 repo of ``fetch``'s source)."""
    if spec.shipped:
        raise HubError(f"{spec.name} ships inside the package: nothing to download")
    fetch = fetch or pick_fetch()
    archive_fetch = archive_fetch or pick_fetch(v1=True)
    found = locate(spec, [root, *(search or [])])
    wanted = [f for f in spec.files if f.required or not required_only]
    out: dict[str, Path] = {}
    for i, f in enumerate(wanted):
        path = found[f.path]
        if path is not None and _sound(spec, f, path):
            out[f.path] = path
            continue
        try:
            path = fetch_t5x(f.path, root, archive_fetch) if f.kind == "t5x" else fetch(f.path, root)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # offline, DNS, HTTP 404, HF_HUB_OFFLINE: all end in the same instructions
            left = [g for g in wanted[i:] if g.path not in out]
            what = f.path + ".tar" if f.kind == "t5x" else f.path
            raise HubError(f"cannot download {what} ({type(e).__name__}: {e})\n"
                           + missing_message(spec, left, root)) from e
        forget(path, f.path)  # a new copy: its sha256 is recorded afresh
        verify_file(spec, f, path)
        out[f.path] = path
    return out


def fetch_t5x(rel: str, root: Path, fetch: Fetch) -> Path:
    """``rel``.tar fetched and unpacked into the folder ``root/rel`` (see the module doc); returns the folder.
    A folder already there that did not verify is moved aside to ``<name>.broken``, not deleted."""
    tar = fetch(rel + ".tar", root)
    dest = root / rel
    work = dest.with_name(dest.name + ".extracting")
    shutil.rmtree(work, ignore_errors=True)  # an earlier extraction that was cut off
    try:
        with tarfile.open(tar) as archive:
            archive.extractall(work, filter="data")
        t5x_folder(work)  # raises unless a T5X checkpoint came out
    except (tarfile.TarError, OSError, CheckpointError) as e:
        shutil.rmtree(work, ignore_errors=True)
        tar.unlink(missing_ok=True)  # a damaged download: the next run fetches it again
        raise HubError(f"{tar} is not a readable tar archive of a T5X checkpoint ({e}); removed it: "
                       "download it again") from e
    if dest.exists():
        aside = dest.with_name(dest.name + ".broken")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(dest, aside)
        print(f"openmrt: moved the incomplete {dest} aside to {aside}", flush=True)
    os.replace(work, dest)
    tar.unlink()
    return dest


def _sound(spec: BundleSpec, f: HubFile, path: Path) -> bool:
    try:
        verify_file(spec, f, path)
        return True
    except HubError as e:
        print(f"openmrt: {e}\n  fetching it again", flush=True)
        return False

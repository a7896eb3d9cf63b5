"""Training killed at random moments (issue 16 §5): LM, codec (both) and style training, each SIGKILLed again and again
and resumed by rerunning the same command, must lose nothing that was checkpointed, never leave a half-written
file, and end on the uninterrupted run's curve and weights.

The moments are drawn from a seeded generator, so CI tries the same ones every run. Most are events inside the
trainer (the n-th optimizer step, the n-th log row, part-way through writing the n-th checkpoint or weight file,
just before the n-th atomic rename, part-way through the style features cache): the child kills itself with
SIGKILL there, which is what an outside SIGKILL at that instant does (no handler, no flush, no cleanup). One kill
per trainer is an outside SIGKILL after a random delay, wherever the trainer happens to be.

Starting Python and torch for each of the 40 runs would take minutes, so one server process imports everything
once and forks a child per run (it runs no torch op itself, so the children's thread pools start clean).
A journal the child appends to after each completed rename of last.pt says what was checkpointed before the kill.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
SEED = 16
EVENTS_PER_TRAINER = 7  # in-child event kills (deterministic); 4 trainers -> 28, plus one outside kill each
TRAINERS = ("lm", "codec", "codec2", "style")
STEPS = {"lm": 12, "codec": 12, "codec2": 12, "style": 10}
EXPORT = {"lm": "lm.safetensors", "codec": "codec.safetensors", "codec2": "codec_v2.safetensors",
          "style": "style.safetensors"}


# ----------------------------------------------------------------------------- the fork server (its own process)


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def _write_part(target, data: bytes, frac: float) -> None:
    """The first ``frac`` of ``data`` where a writer was putting it (a path or an open file), then death."""
    part = data[: max(1, int(len(data) * frac))]
    if isinstance(target, str | os.PathLike):
        with open(target, "wb") as f:
            f.write(part)
    else:
        target.write(part)
        target.flush()
    _die()


def _install(plan: dict | None, journal: str) -> None:
    """Patch the writers a trainer goes through so the child dies at ``plan``'s moment, and journal each
    checkpoint whose rename completed (what a kill must never lose)."""
    import safetensors.torch as st

    from openmrt.train.common import CSVLog

    counts: dict[str, int] = defaultdict(int)
    pending: dict[str, int] = {}  # temporary checkpoint path -> its step

    def hit(kind: str) -> bool:
        counts[kind] += 1
        return plan is not None and plan["kind"] == kind and counts[kind] == plan["n"]

    def note(line: dict) -> None:
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, (json.dumps(line) + "\n").encode())
        os.close(fd)

    real_save = torch.save

    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and "step" in obj and isinstance(f, str | os.PathLike):
            pending[str(f)] = int(obj["step"])
        if hit("torch_save"):
            buf = io.BytesIO()
            real_save(obj, buf)
            _write_part(f, buf.getvalue(), plan["frac"])
        return real_save(obj, f, *a, **k)

    real_replace = os.replace

    def replace(src, dst, **k):
        if hit("rename"):
            _die()
        real_replace(src, dst, **k)
        if str(src) in pending and Path(dst).name == "last.pt":
            note({"checkpoint": pending.pop(str(src))})

    real_save_file = st.save_file

    def save_file(tensors, filename, metadata=None):
        if hit("safetensors"):
            _write_part(filename, st.save(tensors, metadata=metadata), plan["frac"])
        return real_save_file(tensors, filename, metadata=metadata)

    real_savez = np.savez

    def savez(file, *a, **k):
        if hit("npz"):
            buf = io.BytesIO()
            real_savez(buf, *a, **k)
            if isinstance(file, str | os.PathLike) and not str(file).endswith(".npz"):
                file = f"{file}.npz"  # where np.savez itself would have written
            _write_part(file, buf.getvalue(), plan["frac"])
        return real_savez(file, *a, **k)

    real_write = CSVLog.write

    def write(self, row):
        real_write(self, row)
        if hit("log"):
            _die()

    def after_step(opt, args, kwargs):
        f = sys._getframe()
        while f is not None and f.f_code.co_name != "_init_optim_state":
            f = f.f_back
        if f is None and hit("step"):  # not the empty step torch's set_state_dict takes to create the state
            _die()

    torch.save, os.replace, st.save_file, np.savez, CSVLog.write = save, replace, save_file, savez, write
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(after_step)


def _child(req: dict) -> None:
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    rc = 1
    try:
        torch.set_num_threads(1)
        _install(req.get("plan"), req["journal"])
        from openmrt.cli import main

        rc = main(req["argv"])
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def serve() -> None:
    """Read one JSON request a line from stdin, fork a child that runs it, answer how it ended."""
    import openmrt.cli  # noqa: F401  (import everything once; the children inherit it)
    import openmrt.train.codec  # noqa: F401
    import openmrt.train.codec2  # noqa: F401
    import openmrt.train.lm  # noqa: F401
    import openmrt.train.style  # noqa: F401

    torch.set_num_threads(1)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        t0 = time.monotonic()
        done = 0
        if req.get("delay") is not None:  # the outside kill
            while time.monotonic() - t0 < req["delay"]:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.002)
            if not done:
                os.kill(pid, signal.SIGKILL)
        while not done:  # a child that hangs is ended, not waited on forever
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done and time.monotonic() - t0 > 600:
                os.kill(pid, signal.SIGKILL)
                done, status = os.waitpid(pid, 0)
            time.sleep(0.002)
        ans = {"killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
               "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, "sec": time.monotonic() - t0}
        out.write(json.dumps(ans) + "\n")
        out.flush()


class Server:
    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.proc = subprocess.Popen([sys.executable, "-c", "import test_train_kills as t; t.serve()"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self, argv: list[str], log: Path, journal: Path, plan: dict | None = None,
            delay: float | None = None) -> dict:
        self.proc.stdin.write(json.dumps({"argv": argv, "log": str(log), "journal": str(journal), "plan": plan,
                                          "delay": delay}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ----------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from lm_data import make_token_shards
    from test_style_train import _shards
    from test_train_codec import make_audio_shards

    root = tmp_path_factory.mktemp("kill-data")
    audio = make_audio_shards(root / "codec")
    return {"lm": make_token_shards(root / "lm"), "codec": audio, "codec2": audio, "style": _shards(root / "style", 0)}


def argv(what: str, data: Path, out: Path) -> list[str]:
    n = str(STEPS[what])
    if what == "lm":
        return ["train", "lm", "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", n,
                "--batch", "2", "--crop", "24", "--lr", "3e-3", "--warmup", "3", "--log-every", "1",
                "--eval-every", "4", "--holdout", "1", "--ckpt-every", "1"]
    if what == "codec":
        return ["train", "codec", "--data", str(data), "--out", str(out), "--preset", "demo", "--width", "0.03125",
                "--levels", "4", "--steps", n, "--batch", "2", "--crop", "4", "--warmup", "2", "--vq-start", "3",
                "--kmeans-batches", "2", "--restart-every", "3", "--log-every", "1", "--threads", "1",
                "--ckpt-every", "1"]
    if what == "codec2":
        return ["train", "codec2", "--data", str(data), "--out", str(out), "--latent-dim", "16", "--width", "16",
                "--frame-width", "8", "--groups", "2", "--levels", "4", "--steps", n, "--batch", "2", "--crop", "4",
                "--warmup", "2", "--vq-start", "3", "--kmeans-batches", "2", "--restart-every", "3", "--log-every",
                "1", "--threads", "1", "--ckpt-every", "1", "--device", "cpu"]
    return ["train", "style", "--data", str(data), "--out", str(out), "--steps", n, "--batch", "4",
            "--crop-seconds", "2", "--rvq-codes", "16", "--rvq-hop", "0.2", "--dim", "16", "--vocab", "40",
            "--log-every", "1", "--warmup", "2", "--ckpt-seconds", "0"]


def plan_kills(what: str, rng: np.random.Generator) -> list[dict]:
    """This trainer's event kills: every kind once (the style cache first: it is written only by the first run),
    the rest drawn; each at the n-th such event after the (re)start, n small so the run keeps moving."""
    kinds = ["step", "log", "torch_save", "rename", "safetensors"]
    kinds += list(rng.choice(["step", "log", "torch_save", "rename"], EVENTS_PER_TRAINER - len(kinds)))
    kinds = list(rng.permutation(kinds))
    if what == "style":  # its weight file is written once, at the very end: kill that last
        kinds.remove("safetensors")
        kinds = ["npz", *kinds[: EVENTS_PER_TRAINER - 2], "safetensors"]
    return [{"kind": str(k), "n": 1 if k in ("npz", "safetensors") and what == "style" else int(rng.integers(1, 4)),
             "frac": round(float(rng.uniform(0.05, 0.95)), 3)} for k in kinds]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_folder(what: str, out: Path, journal: Path) -> int | None:
    """After a kill: only the run's own files (and its writer's temporary names) are there, every one of them
    reads whole, and last.pt holds at least the last checkpoint journalled as done. Returns last.pt's step."""
    names = {"last.pt", "log.csv", "eval.csv", EXPORT[what]}
    for p in out.iterdir():
        base = p.name.removesuffix(".tmp")
        assert base in names or re.fullmatch(r"mels_[0-9a-f]{12}\.npz", base), f"stray file {p.name}"
    for p in out.glob("mels_*.npz"):  # the style features cache: every array must read (zip CRCs checked)
        with np.load(p, allow_pickle=False) as z:
            for k in z.files:
                z[k]  # noqa: B018
    for name in ("log.csv", "eval.csv"):
        if (out / name).exists() and (out / name).stat().st_size:
            for r in read_rows(out / name):
                int(r["step"])
                float(r["loss" if name == "log.csv" else "eval_loss"])
    if (out / EXPORT[what]).exists():
        load_export(what, out)
    saved = [json.loads(ln)["checkpoint"] for ln in journal.read_text().splitlines()] if journal.exists() else []
    if not (out / "last.pt").exists():
        assert not saved, f"last.pt gone after checkpoint {saved[-1]} was written"
        return None
    from openmrt.train.common import load_checkpoint

    step = int(load_checkpoint(out / "last.pt")["step"])  # raises CheckpointError on half a file
    assert step >= max(saved, default=0), f"last.pt at step {step}, but step {max(saved)} had been checkpointed"
    return step


def load_export(what: str, out: Path) -> dict[str, torch.Tensor]:
    if what == "lm":
        from openmrt.lm.checkpoint import load_any_lm

        return load_any_lm(out / EXPORT[what]).state_dict()
    if what == "codec":
        from openmrt.codec.checkpoint import load_codec

        return load_codec(out / EXPORT[what]).state_dict()
    if what == "codec2":
        from openmrt.codec.v2 import load_codec_v2

        return load_codec_v2(out / EXPORT[what]).state_dict()
    from openmrt.style.model import StyleModel

    return StyleModel.load(out / EXPORT[what]).tensors()


def resumed_at(log: Path) -> int | None:
    m = re.findall(r"resum\w+ \S+ at step (\d+)", log.read_text())
    return int(m[-1]) if m else None


@pytest.mark.slow  # about 1.5 minutes on 2 cores
def test_training_survives_sigkill_at_random_moments(data, tmp_path):
    rng = np.random.default_rng(SEED)
    server = Server()
    kills: dict[str, list[str]] = defaultdict(list)
    t0 = time.monotonic()
    try:
        for what in TRAINERS:
            ref, out, logs = tmp_path / f"{what}-ref", tmp_path / what, tmp_path / f"{what}-logs"
            logs.mkdir()
            r = server.run(argv(what, data[what], ref), logs / "ref.txt", logs / "ref.journal")
            assert r["code"] == 0, (logs / "ref.txt").read_text()[-3000:]
            journal = logs / "journal"
            plans = [*plan_kills(what, rng), {"kind": "outside", "delay": round(float(rng.uniform(0.2, 1.0)), 3)}]
            step = None
            for i, plan in enumerate(plans):
                log = logs / f"run{i}.txt"
                r = server.run(argv(what, data[what], out), log, journal,
                               plan=None if plan["kind"] == "outside" else plan, delay=plan.get("delay"))
                if plan["kind"] != "outside":  # an event kill happens where it was planned, every time
                    assert r["killed"], f"{what} {plan}: not killed ({r}): {log.read_text()[-3000:]}"
                elif not r["killed"]:  # the outside kill came after the run had finished
                    assert r["code"] == 0, log.read_text()[-3000:]
                killed = r["killed"]
                # it started from the checkpoint there (an outside kill may come before it says so)
                if step is not None and (plan["kind"] != "outside" or resumed_at(log) is not None):
                    assert resumed_at(log) == step, f"{what} run {i} resumed at {resumed_at(log)}, not {step}"
                step = check_folder(what, out, journal)
                if killed:
                    kills[what].append(f"{plan['kind']}@{step}")  # the kind, and the step last.pt kept
            log = logs / "final.txt"
            r = server.run(argv(what, data[what], out), log, journal)
            assert r["code"] == 0, log.read_text()[-3000:]
            if step is not None:
                assert resumed_at(log) == step
            assert check_folder(what, out, journal) == STEPS[what]
            assert not list(out.glob("*.tmp")), "a temporary file outlived the run"
            diff = compare(what, ref, out)
            print(f"{what}: {len(kills[what])} kills, largest difference from the uninterrupted run: loss "
                  f"{diff[0]:.2g}, weights {diff[1]:.2g} ({time.monotonic() - t0:.1f} s so far)")
    finally:
        server.close()
    total = sum(map(len, kills.values()))
    print(f"{total} kills in {time.monotonic() - t0:.1f} s: " + "; ".join(
        f"{w}: {', '.join(k)}" for w, k in kills.items()))
    assert total >= 20 and all(len(k) >= EVENTS_PER_TRAINER for k in kills.values())


def compare(what: str, ref: Path, out: Path) -> tuple[float, float]:
    """Every step logged (re-logged steps agree with their first try), the same losses and weights as the run
    that was never killed. Returns the largest differences (loss, weight)."""
    dl = dw = 0.0
    for name in ("log.csv", "eval.csv") if what == "lm" else ("log.csv",):
        a, b = read_rows(ref / name), read_rows(out / name)
        key = "loss" if name == "log.csv" else "eval_loss"
        want = {int(r["step"]): float(r[key]) for r in a}
        got: dict[int, list[float]] = defaultdict(list)
        for r in b:
            got[int(r["step"])].append(float(r[key]))
        assert sorted(got) == sorted(want), f"{what} {name}: steps {sorted(got)}"
        for s, vals in got.items():
            assert vals == pytest.approx([want[s]] * len(vals), abs=1e-5), f"{what} {name} step {s}"
            dl = max(dl, *(abs(v - want[s]) for v in vals))
    ka = torch.load(ref / "last.pt", weights_only=False)
    kb = torch.load(out / "last.pt", weights_only=False)
    model = "audio" if what == "style" else "model"
    for k, v in ka[model].items():
        assert torch.allclose(v.float(), kb[model][k].float(), atol=1e-6), f"{what} {k}"
        dw = max(dw, float((v.float() - kb[model][k].float()).abs().max()) if v.numel() else 0.0)
    ea, eb = load_export(what, ref), load_export(what, out)
    assert ea.keys() == eb.keys()
    for k in ea:
        assert torch.allclose(ea[k].float(), eb[k].float(), atol=1e-6), f"{what} export {k}"
    return dl, dw


def test_an_unreadable_features_cache_is_recomputed(data, tmp_path, capsys):
    """A style features cache cut short (a kill before the cache was written atomically) is recomputed and
    rewritten whole, not a crash at every resume."""
    from openmrt.style.data import load_examples

    first = load_examples([data["style"]], cache=tmp_path)
    (cache,) = tmp_path.glob("mels_*.npz")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    again = load_examples([data["style"]], cache=tmp_path)
    assert "recomputing the features cache" in capsys.readouterr().out
    assert len(again) == len(first) and all(torch.equal(a.mel, b.mel) for a, b in zip(first, again, strict=True))
    cached = load_examples([data["style"]], cache=tmp_path)  # read back from the rewritten file
    assert "recomputing" not in capsys.readouterr().out
    assert all(torch.equal(a.mel, b.mel) for a, b in zip(first, cached, strict=True))
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]

"""The prepared GPU check (driver of benchmarks/device_check.sh): correctness first, then speed.

    PYTHONPATH=. python3 benchmarks/device_check.py [--out DIR] [--dry-run] [--budget S]

Phases, each in its own subprocess with its own time box (one failing records its error and the
next runs), the whole run inside ``--budget`` seconds (default 285: a GPU window is short):

  env          versions, GPU, which optional packages import; the import list of the phases
  correctness  graph-safe step vs eager tokens with injected noise (float32); bf16 logit error and
               greedy agreement; the seeded full-size golden (mrt2_small LM + SpectroStream) on the device
  small        mrt2_small whole frame, eager vs graphs (benchmarks/realtime.py)
  base         mrt2_base whole frame, openmrt's best setting (random weights made on the GPU)
  v1           the v1 decode as CUDA graphs: the tiny v1 golden's five scenarios token for token (the official
               noise injected; needs shared/golden/v1), then one 2 s base chunk, graphs float32 and bfloat16
               against eager float32 (benchmarks/v1_chunk.py)
  sweep        players batch: the largest N with every slot's frame under 40 ms p99
  kernels      one frame under torch.profiler: CUDA kernels launched (CPU ops on the CPU)

After every phase DIR/device_check.json is rewritten with everything so far. ``--dry-run`` runs
every phase on the CPU at tiny shapes (CI runs it). It imports only what the GPU image has
(torch, numpy, safetensors, tqdm, matplotlib): no soundfile, sounddevice, mido, pretty_midi,
librosa, fluidsynth or scipy. The full-size golden needs shared/golden/seeded: carry a copy in
the checkout's shared/ (docs/benchmarks.md, "GPU check").
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FORBIDDEN = ("soundfile", "sounddevice", "mido", "pretty_midi", "librosa", "fluidsynth", "scipy")
PHASES = {"env": 30, "correctness": 110, "small": 70, "base": 70, "v1": 60, "sweep": 60, "kernels": 40}  # time boxes, s
SWEEP = [1, 8, 32, 64, 128, 256, 512]  # players per batch: the Players graph sizes (padded above 128)
BUDGET_MS = 40.0


# ----------------------------------------------------------------------------------------------
# Helpers the phases share (imported lazily: a phase imports only what it needs)


def _rt():
    sys.path.insert(0, str(HERE))
    import realtime

    return realtime


def _common():
    sys.path.insert(0, str(HERE))
    import common

    return common


def _device(dry: bool):
    import torch

    return torch.device("cpu") if dry else torch.device("cuda")


def _sub(results: dict, name: str, fn, *a, **kw) -> None:
    """One sub-check, failure-isolated: its dict, or its error, under ``name``."""
    t0 = time.perf_counter()
    try:
        results[name] = {"status": "ok", **fn(*a, **kw)}
    except Exception as e:  # noqa: BLE001 - record any failure, run the next check
        unavailable = type(e).__name__ == "Unavailable"
        results[name] = {"status": "unavailable" if unavailable else "error", "error": f"{type(e).__name__}: {e}"}
        if not unavailable:
            results[name]["traceback"] = traceback.format_exc()[-2000:]
    results[name]["seconds"] = round(time.perf_counter() - t0, 2)


def _realtime(args, out_name: str, extra: list[str], timeout: float) -> dict:
    """benchmarks/realtime.py as a subprocess (its own fresh process per configuration)."""
    out = Path(args.out) / f"{out_name}.json"
    cmd = [sys.executable, str(HERE / "realtime.py"), "--out", str(out), "--timeout", str(max(10, timeout - 8)), *extra]
    try:
        p = _common().run_group(cmd, timeout)
        failed = f"realtime.py exit {p.returncode}: {p.stderr.strip()[-600:]}" if p.returncode else None
    except subprocess.TimeoutExpired:
        failed = f"realtime.py ran past {timeout:.0f} s (the rows done by then are kept)"
    if not out.is_file():
        raise RuntimeError(failed or "realtime.py wrote no result")
    doc = json.loads(out.read_text())  # rewritten after every configuration
    rows = [{k: v for k, v in r.items() if k not in ("frames_ms", "rounds")} for r in doc["rows"]]
    res = {"file": out.name, "histogram": doc.get("histogram"), "rows": rows, "complete": doc.get("complete")}
    if failed:
        res["run"] = {"status": "error", "error": failed}
    for r in rows:  # a failed configuration is this phase's error; a missing API is only noted
        if r.get("error"):
            res[f"{r['setting']}_{r['dtype']}"] = {"status": "unavailable" if r.get("unavailable") else "error",
                                                   "error": r["error"]}
    return res


# ----------------------------------------------------------------------------------------------
# Phases


def phase_env(args) -> dict:
    # First, in a process that has imported nothing else yet: the modules every phase imports must
    # pull in none of the packages the GPU image lacks (checked before probing those packages).
    before = set(sys.modules)
    _rt()
    for m in ("openmrt.engine.bundle", "openmrt.engine.frames", "openmrt.lm.generate", "openmrt.lm.convert",
              "openmrt.codec.convert", "openmrt.codec.output", "seeded"):
        if m == "seeded":
            sys.path.insert(0, str(ROOT / "tests"))
        importlib.import_module(m)
    pulled = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(FORBIDDEN))

    import platform

    import numpy as np
    import torch

    res = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
           "numpy": np.__version__, "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
           "cpu_count": os.cpu_count(), "phase_imports_forbidden": pulled}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        res.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   sms=p.multi_processor_count, cudnn=torch.backends.cudnn.version())
        try:
            res["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm",
                                                "--format=csv,noheader"], capture_output=True, text=True,
                                               timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            res["nvidia_smi"] = f"not run: {e}"
    res["packages"] = {}
    for name in ("safetensors", "tqdm", "matplotlib", *FORBIDDEN):
        try:
            res["packages"][name] = getattr(importlib.import_module(name), "__version__", "present")
        except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
            res["packages"][name] = f"missing ({type(e).__name__})"
    if pulled:
        raise RuntimeError(f"the phases import {pulled}, which the GPU image does not have")
    return res


def _lm_golden(model, d, device, *, sampled: bool) -> dict:
    """Free-running with the golden Gumbel noise injected: tokens exact; max errors of the
    temporal output and the capped logits (golden README §6.3: 1e-4 and 2e-4)."""
    import numpy as np
    import torch

    from openmrt.lm.generate import LMGenerator

    gen = LMGenerator(model, temperature=float(d["temperature"]), top_k=int(d["top_k"]))
    T = d["tokens"].shape[0]
    same, err_h, err_l = 0, 0.0, 0.0
    for t in range(T):
        tr: dict = {}
        out = gen.step(torch.as_tensor(d["cond_tokens"][t : t + 1]),
                       gumbel=torch.as_tensor(d["gumbel_valid"][t : t + 1]).to(device) if sampled else None, trace=tr)
        same += int((out[0].cpu().numpy() == d["tokens"][t]).sum())
        capped = torch.stack(tr["logits"], 2)[0].cpu().numpy().reshape(12, -1)
        ref_l = d["depth_logits_capped_valid"][t].reshape(12, -1)
        err_l = max(err_l, float(np.abs(capped - ref_l).max()))
        err_h = max(err_h, float(np.abs(tr["temporal_out"].cpu().numpy().reshape(-1)
                                        - d["temporal_outputs"][t].reshape(-1)).max()))
    ok = same == T * 12 and err_h <= 1e-4 and err_l <= 2e-4
    res = {"tokens_equal": f"{same}/{T * 12}", "temporal_max_err": err_h, "capped_max_err": err_l, "pass": ok}
    if not ok:
        raise AssertionError(f"golden mismatch: {res}")
    return res


def _bf16_error(model_f32, d) -> dict:
    """The LM in bfloat16, teacher-forced on the golden frames: capped-logit error against the
    float32 golden, and greedy agreement (argmax of the bf16 logits vs the golden greedy tokens)."""
    import copy

    import numpy as np
    import torch

    from openmrt import tokens as tk
    from openmrt.lm.generate import LMGenerator

    model = copy.deepcopy(model_f32).to(torch.bfloat16)
    gen = LMGenerator(model, temperature=0.0)
    T = d["tokens"].shape[0]
    err, agree, finite = 0.0, 0, True
    offsets = np.array([tk.level_slice(q).start for q in range(12)])
    for t in range(T):
        tr: dict = {}
        gen.step(torch.as_tensor(d["cond_tokens"][t : t + 1]), forced=torch.as_tensor(d["tokens"][t : t + 1]), trace=tr)
        capped = torch.stack(tr["logits"], 2)[0].cpu().float().numpy().reshape(12, -1)
        finite &= bool(np.isfinite(capped).all())
        if "depth_logits_capped_valid" in d:  # every level recorded
            ref = d["depth_logits_capped_valid"][t].reshape(12, -1)
        else:  # lm_long48_greedy: levels 0-1 in full
            ref = d["capped_valid_levels01"][t]
        err = max(err, float(np.abs(capped[: len(ref)] - ref).max()))
        agree += int((capped.argmax(-1) + offsets == d["tokens"][t]).sum())
    del model
    return {"capped_max_err": round(err, 5), "greedy_agreement": f"{agree}/{T * 12}", "finite": finite,
            "frames": T}


def _graph_vs_eager(model, d, device) -> dict:
    """The CUDA-graph LM frame against the same graph-safe step run eagerly, float32, with the same
    seeded per-stream noise: identical tokens over the golden conditioning (wlm's self-check,
    via realtime.graph_vs_eager; the eager step itself meets the golden in the next checks)."""
    import torch

    eager, graph = _rt().graph_vs_eager(model, torch.as_tensor(d["cond_tokens"]).to(device), seed=7)
    same, n = int((eager == graph).sum()), eager.numel()
    if same != n:
        raise AssertionError(f"graph step tokens differ from eager: {same}/{n} equal")
    return {"tokens_equal": f"{same}/{n}"}


def _codec_golden(codec, gold, device, frames: int) -> dict:
    """Streaming decode of the golden codes on the device vs the official streaming audio (1e-4)."""
    import numpy as np
    import torch

    state = codec.init_decode_state(1, device)
    codes = torch.as_tensor(gold["codes12"]).long().to(device)
    with torch.inference_mode():
        wav = torch.cat([codec.decode_step(codes[None, t], state) for t in range(frames)], 1)[0].cpu().numpy()
    err = float(np.abs(wav - gold["dec_step_wav"][: frames * 1920]).max())
    res = {"frames": frames, "max_abs_err": err, "pass": err <= 1e-4}
    if not res["pass"]:
        raise AssertionError(f"codec golden mismatch: {res}")
    return res


def phase_correctness(args) -> dict:
    import numpy as np
    import torch

    rt = _rt()
    device = _device(args.dry_run)
    torch.backends.cuda.matmul.allow_tf32 = False  # the goldens are float32 ('highest' precision)
    torch.backends.cudnn.allow_tf32 = False
    from openmrt.config import lm_config
    from openmrt.lm.convert import load_official
    from openmrt.lm.model import Depthformer

    golden = rt.golden_dir(args.golden)
    if golden is None:
        raise RuntimeError("shared/golden not found: copy shared/golden/seeded into the checkout's shared/ "
                           "(docs/benchmarks.md, GPU check) or pass --golden")
    res: dict = {"device": str(device), "golden": str(golden)}
    sys.path.insert(0, str(ROOT / "tests"))
    from seeded import CODEC_SEED, rebuild

    if args.dry_run:  # tiny shapes: the reduced golden model (shared/golden/tiny_params.safetensors)
        from safetensors.numpy import load_file

        model = Depthformer(lm_config("tiny"))
        load_official(model, load_file(str(golden / "tiny_params.safetensors")))
        sampled, greedy = np.load(golden / "nocfg_f32.npz"), np.load(golden / "greedy_f32.npz")
        codec_w = rebuild(golden / "seeded" / "codec_param_keys.txt", CODEC_SEED, only="params/soundstream/")
    else:  # the seeded full-size mrt2_small and SpectroStream (shared/golden/seeded), fingerprint-checked
        lm_w, codec_w = rt.seeded_weights(golden)
        model = Depthformer(lm_config("mrt2_small"))
        load_official(model, lm_w)
        del lm_w
        sampled, greedy = np.load(golden / "seeded" / "lm_sampled.npz"), np.load(golden / "seeded" / "lm_greedy.npz")
        long48 = np.load(golden / "seeded" / "lm_long48_greedy.npz")
    model = model.eval().to(device)
    _sub(res, "graph_vs_eager_f32", _graph_vs_eager, model, sampled, device)
    _sub(res, "lm_golden_sampled", _lm_golden, model, sampled, device, sampled=True)
    _sub(res, "lm_golden_greedy", _lm_golden, model, greedy, device, sampled=False)
    _sub(res, "bf16_logits", _bf16_error, model, greedy if args.dry_run else long48)
    del model

    def codec_check():
        from openmrt.codec import SpectroStream, load_official_state

        codec = SpectroStream()
        load_official_state(codec, codec_w, ("decoder", "quantizer"))
        gold = np.load(golden / "seeded" / "codec_golden.npz")
        return _codec_golden(codec.eval().to(device), gold, device, 3 if args.dry_run else 50)

    _sub(res, "codec_golden", codec_check)
    return res


def phase_small(args, timeout: float) -> dict:
    timeout -= 4  # leave the phase time to report what realtime.py finished
    if args.dry_run:
        extra = ["--device", "cpu", "--model", "tiny", "--frames", "10", "--warmup", "2", "--threads", "1"]
    else:
        extra = ["--device", "cuda", "--model", "mrt2_small", "--weights", "random", "--frames", "500",
                 "--warmup", "30", "--threads", "4"]
    return _realtime(args, "small", extra + ["--settings", "eager,graphs"], timeout)


def phase_base(args, timeout: float) -> dict:
    timeout -= 4
    if args.dry_run:
        extra = ["--device", "cpu", "--model", "tiny", "--frames", "10", "--warmup", "2", "--threads", "1"]
    else:
        extra = ["--device", "cuda", "--model", "mrt2_base", "--frames", "300", "--warmup", "20", "--threads", "4"]
    return _realtime(args, "base", extra + ["--settings", "graphs,eager"], timeout)  # graphs first


def _best_step(rt, bundle, streams: int, device):
    """The first available of players and the --best settings: (name, step)."""
    import torch

    errors = []
    for setting in ("players", *(s for s, _ in rt.BEST[device.type])):
        try:
            if rt.unavailable(setting, device, streams):
                raise rt.Unavailable(rt.unavailable(setting, device, streams))
            return setting, rt.make_frames(setting, bundle, streams, 0, torch.get_num_threads())
        except rt.Unavailable as e:
            errors.append(f"{setting}: {e}")
    raise rt.Unavailable("; ".join(errors))


def phase_sweep(args, deadline: float) -> dict:
    """Largest players batch with the p99 frame under 40 ms (each slot gets its frame in that time)."""
    import torch

    rt = _rt()
    device = _device(args.dry_run)
    torch.set_num_threads(1 if args.dry_run else 4)
    model, sizes, frames = ("tiny", [1, 2, 4], 10) if args.dry_run else ("mrt2_small", SWEEP, 60)
    dtype = dict(rt.BEST[device.type])[rt.BEST[device.type][0][0]]
    bundle, _ = rt.build_bundle(model, device, rt.resolve_dtype(dtype, device), "random", None)
    res: dict = {"model": model, "dtype": dtype, "frames": frames, "points": []}
    for n in sizes:
        if time.time() > deadline - 8:
            res["stopped"] = "time box"
            break
        setting, step = _best_step(rt, bundle, n, device)
        st = rt.frame_stats(rt.time_frames(step, device, 5, frames)["frames_ms"])
        res["points"].append({"streams": n, "setting": setting, **st})
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if st["p99_ms"] > BUDGET_MS and not args.dry_run:  # the dry run exercises every size
            break
    under = [p["streams"] for p in res["points"] if p["p99_ms"] <= BUDGET_MS]
    res["max_streams_under_40ms_p99"] = max(under) if under else 0
    return res


def _count(prof, cuda: bool) -> dict:
    from collections import Counter

    kinds, launches = Counter(), Counter()
    for e in prof.events():
        dt = str(getattr(e, "device_type", "")).rsplit(".", 1)[-1]
        if cuda and dt == "CUDA":
            kinds[e.name] += 1
        elif not cuda and dt == "CPU" and e.name.startswith("aten::"):
            kinds[e.name] += 1
        if e.name.startswith(("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch", "cudaMemcpy")):
            launches[e.name] += 1  # host-side calls: a graph replay is one launch for all its kernels
    return {"total": sum(kinds.values()), "distinct": len(kinds), "top": kinds.most_common(8),
            "host_launch_calls": dict(launches)}


def phase_kernels(args) -> dict:
    """One frame under torch.profiler, per available setting: GPU kernels (or CPU aten ops)."""
    from torch.profiler import ProfilerActivity, profile

    rt = _rt()
    device = _device(args.dry_run)
    cuda = device.type == "cuda"
    model = "tiny" if args.dry_run else "mrt2_small"
    dtype = rt.resolve_dtype(None, device)
    bundle, _ = rt.build_bundle(model, device, dtype, "random", None)
    res: dict = {"model": model, "dtype": str(dtype), "what": "CUDA kernels" if cuda else "CPU aten ops"}

    def count(setting):
        step = rt.make_frames(setting, bundle, 1, 0)
        for _ in range(5):
            step()
        rt._sync(device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            step()
            rt._sync(device)
        return _count(prof, cuda)

    for setting in ("eager", "graphs"):
        _sub(res, setting, count, setting)
    return res


def _v1_golden(golden, device) -> dict:
    """The tiny v1 golden (its scenarios, 800 steps each) through the decoder the engine uses on this device."""
    import numpy as np
    import torch
    from safetensors.numpy import load_file

    from openmrt.lm_v1.config import v1_config
    from openmrt.lm_v1.convert import load_official
    from openmrt.lm_v1.generate import ChunkDecoder, V1Sampling
    from openmrt.lm_v1.model import V1LM

    sys.path.insert(0, str(ROOT / "tests"))
    from v1_noise import recorded_noise

    model = V1LM(v1_config("tiny"))
    load_official(model, load_file(str(golden / "v1" / "tiny_params.safetensors")))
    model = model.eval().to(device)
    summary = json.loads((golden / "v1" / "tiny_summary.json").read_text())
    res = {"graphs": device.type == "cuda"}
    for sc in summary["scenarios"]:
        name, w, t, k = sc["name"], sc["guidance_weight"], sc["temperature"], sc["topk"]
        d = np.load(golden / "v1" / f"{name}.npz")
        dec = ChunkDecoder(model, 2, cuda_graph=device.type == "cuda")
        ids = torch.as_tensor(d["encoder_input_tokens"]).long().to(device)
        toks = dec.run(ids, V1Sampling(w, t, k), noise=recorded_noise(d, device) if t else None).cpu().numpy()
        differ = int((toks != d["tokens"]).any(0).sum())
        res[name] = f"{800 - differ}/800 steps equal"
        if differ:
            raise AssertionError(f"v1 {name}: {differ} of 800 steps differ from the golden")
    return res


def phase_v1(args) -> dict:
    import torch

    rt = _rt()
    device = _device(args.dry_run)
    torch.backends.cuda.matmul.allow_tf32 = False  # the golden is float32
    res: dict = {"device": str(device)}
    golden = rt.golden_dir(args.golden)
    if golden is None or not (golden / "v1").is_dir():
        res["v1_golden"] = {"status": "unavailable", "error": "shared/golden/v1 not carried"}
    else:
        _sub(res, "v1_golden", _v1_golden, golden, device)
    sys.path.insert(0, str(HERE))
    import v1_chunk

    size, chunks = ("tiny", 1) if args.dry_run else ("base", 2)
    runs = [(torch.float32, False)] + ([(torch.float32, True), (torch.bfloat16, True)] if device.type == "cuda" else [])
    for dtype, graphs in runs:
        name = f"{size}_{str(dtype).removeprefix('torch.')}_{'graphs' if graphs else 'eager'}"
        _sub(res, name, v1_chunk.bench, size, device, dtype, chunks, graphs)
    return res


def run_phase(name: str, args, box: float, deadline: float) -> dict:
    fns = {"env": lambda: phase_env(args), "correctness": lambda: phase_correctness(args),
           "small": lambda: phase_small(args, box), "base": lambda: phase_base(args, box),
           "sweep": lambda: phase_sweep(args, min(deadline, time.time() + box)), "kernels": lambda: phase_kernels(args),
           "v1": lambda: phase_v1(args)}
    return fns[name]()


# ----------------------------------------------------------------------------------------------
# The driver


def _write(report: dict, out: Path) -> None:
    tmp = out / ".device_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
    tmp.replace(out / "device_check.json")


def _status(result: dict) -> str:
    subs = [v.get("status") for v in result.values() if isinstance(v, dict) and "status" in v]
    if "error" in subs:
        return "error"
    return "ok"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "device_check_out", help="result folder (default $OUT)")
    ap.add_argument("--dry-run", action="store_true", help="every phase on the CPU at tiny shapes")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for all phases together (default 285; the dry run: 600, boxes x3, for a busy CI)")
    ap.add_argument("--phases", nargs="+", choices=list(PHASES), default=list(PHASES))
    ap.add_argument("--golden", default=None, help="shared/golden (default: $OPENMRT_GOLDEN or shared/golden)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--box", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.phase:  # the child: one phase, its result as JSON
        os.environ.setdefault("OMP_NUM_THREADS", "1" if args.dry_run else "4")
        result = run_phase(args.phase, args, args.box, args.deadline)
        Path(args.result).write_text(json.dumps(result, default=str))
        return 0

    scale = 3.0 if args.dry_run else 1.0  # a dry run on a shared CPU is slow, not wrong
    args.budget = args.budget or (600.0 if args.dry_run else 285.0)
    t_start = time.time()
    deadline = t_start + args.budget
    report = {"started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "dry_run": args.dry_run, "budget_s": args.budget, "phases": {}}
    _write(report, out)
    for name in args.phases:
        left = deadline - time.time()
        if left < 10:
            report["phases"][name] = {"status": "skipped", "error": "out of time (budget)"}
            _write(report, out)
            continue
        box = min(PHASES[name] * scale, left)
        print(f"device_check: {name} (time box {box:.0f} s)", file=sys.stderr, flush=True)
        t0 = time.time()
        entry: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            res_file = Path(tmp) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--out", str(out), "--result",
                   str(res_file), "--box", str(box), "--deadline", str(deadline)]
            if args.dry_run:
                cmd.append("--dry-run")
            if args.golden:
                cmd += ["--golden", args.golden]
            try:
                p = _common().run_group(cmd, box)
                if p.returncode or not res_file.is_file():
                    entry = {"status": "error", "error": f"exit {p.returncode}", "stderr": p.stderr[-3000:]}
                else:
                    result = json.loads(res_file.read_text())
                    entry = {"status": _status(result), "result": result}
            except subprocess.TimeoutExpired as e:
                err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
                entry = {"status": "timeout", "error": f"over its {box:.0f} s time box", "stderr": err[-2000:]}
        entry["seconds"] = round(time.time() - t0, 1)
        report["phases"][name] = entry
        report["elapsed_s"] = round(time.time() - t_start, 1)
        _write(report, out)
        print(f"device_check: {name}: {entry['status']} in {entry['seconds']} s", file=sys.stderr, flush=True)
    bad = [n for n, e in report["phases"].items() if e["status"] != "ok"]
    missing = sorted(f"{n}.{k}" for n, e in report["phases"].items() for k, v in (e.get("result") or {}).items()
                     if isinstance(v, dict) and v.get("status") == "unavailable")
    report["summary"] = {"ok": not bad, "not_ok": bad, "unavailable": missing,
                         "elapsed_s": round(time.time() - t_start, 1)}
    _write(report, out)
    print(json.dumps(report["summary"]), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training of the demo codec v2 (openmrt/codec/v2.py) on rendered shards.

    openmrt train codec2 --data SHARDS [SHARDS ...] --eval-data HELDOUT --out RUN [--decoder plain] ...
    torchrun --nproc_per_node N -m openmrt.cli train codec2 ...      (DDP; gloo on CPU, nccl on GPU)

Per step: random crops of ``--crop`` token frames (token-aligned, so the shards' 25 Hz note labels line up)
-> grid magnitudes (the targets: the analysis STFT, no overlap-add and no phase anywhere in the loss) ->
encoder -> RVQ (straight-through, quantizer dropout, EMA codebook with k-means init and dead-code restarts,
as train/codec.py) -> magnitude decoder. Loss: L1 of compressed magnitudes |X|^0.3 (weighted toward the
partials; a log-magnitude L1 is dominated by the noise floor) + spectral convergence + a small log-magnitude
L1 + ``--pitch-weight`` × BCE of the decoder's pitch gates against the notes the shards carry (so the code
learns to carry pitch first) + the commitment loss.

Batches are a pure function of (seed, step, rank); RUN/last.pt (models, optimizer, codebook statistics,
step, RNG) is written atomically every ``--ckpt-every`` steps or ``--ckpt-minutes``, and rerunning the same
command resumes. RUN/codec_v2.safetensors holds the latest weights, RUN/log.csv the losses, RUN/eval.csv the
held-out figures: log-magnitude L1 on the grid, mel L1 and (``--eval-onsets``) note-onset F1 of the decoded
audio (after the phase head) as a ratio to the original's, codebook perplexity per level.

Imports nothing that needs soundfile/librosa/pretty_midi unless held-out evaluation is asked for, so the
GPU image (torch, numpy, safetensors) can run it (scripts/device_train.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openmrt.codec.harmonic import PITCHES
from openmrt.codec.rtpghi import FRAMES_PER_TOKEN, HOP, PAD, WIN
from openmrt.codec.v2 import CodecV2, CodecV2Config, frame_pitch_targets, save_codec_v2
from openmrt.errors import DataError
from openmrt.frame import FRAME_SAMPLES, SAMPLE_RATE
from openmrt.spectral import LOG_FLOOR
from openmrt.tokens import NOTE_ONSET
from openmrt.train.codec_vq import CodebookLearner, keep_levels
from openmrt.train.common import (
    CSVLog,
    budget_lr,
    cleanup_distributed,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    setup_distributed,
)


class ShardAudio:
    """Audio int16 [2, N], note states int8 [T, 128] and, where the shard keeps the source MIDI and
    pretty_midi is installed, the exact notes (start s, end s, pitch) of every example in shard folders
    (the shard format of openmrt/data/shards.py)."""

    def __init__(self, roots: list[str | Path], min_frames: int = 1):
        self.audio: list[np.ndarray] = []
        self.notes: list[np.ndarray] = []
        self.events: list[np.ndarray | None] = []
        for root in roots:
            root = Path(root)
            index = root / "index.json"
            if not index.is_file():
                raise DataError(f"{root} has no index.json: not a shard folder (openmrt data compose --out ...)")
            for s in json.loads(index.read_text())["shards"]:
                try:
                    with np.load(root / s["file"], allow_pickle=False) as z:
                        audio, notes, offsets = z["audio"], z["notes"], z["offsets"]
                        midi, moff = (z["midi"], z["midi_offsets"]) if "midi" in z.files else (None, None)
                except (OSError, ValueError, KeyError) as e:
                    raise DataError(f"cannot read shard {root / s['file']}: {e}") from e
                for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
                    if b - a >= min_frames:
                        self.audio.append(audio[:, a * FRAME_SAMPLES:b * FRAME_SAMPLES])
                        self.notes.append(notes[a:b])
                        self.events.append(_midi_events(midi[moff[i]:moff[i + 1]].tobytes()) if midi is not None
                                           else None)
        if not self.audio:
            raise DataError(f"{', '.join(map(str, roots))}: no examples of at least {min_frames} frames")
        lengths = np.array([n.shape[0] for n in self.notes], np.float64)
        self.p = lengths / lengths.sum()

    def batch(self, rng: np.random.Generator, size: int, frames: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token-aligned crops: audio [size, 1920·frames, 2] float32, note states [size, frames, 128] int8 and
        the decoder frames' targets [size, 2, 8·frames, 128] (note sounding, note starting: exact from the
        MIDI where the shard keeps it, else from the 25 Hz states). Near-silent crops are redrawn (up to 4)."""
        audio = np.zeros((size, frames * FRAME_SAMPLES, 2), np.float32)
        notes = np.zeros((size, frames, PITCHES), np.int8)
        targets = np.zeros((size, 2, frames * FRAMES_PER_TOKEN, PITCHES), np.float32)
        for b in range(size):
            for _ in range(4):
                i = int(rng.choice(len(self.audio), p=self.p))
                n = self.notes[i].shape[0]
                f0 = int(rng.integers(0, max(1, n - frames + 1)))
                m = min(frames, n - f0)
                a = self.audio[i][:, f0 * FRAME_SAMPLES:(f0 + m) * FRAME_SAMPLES].T.astype(np.float32) / 32768.0
                if np.sqrt(np.mean(a**2)) > 1e-3:
                    break
            audio[b, : len(a)] = a
            notes[b, :m] = self.notes[i][f0:f0 + m]
            if self.events[i] is not None:
                targets[b] = event_targets(self.events[i], f0 * FRAME_SAMPLES / SAMPLE_RATE, frames)
            else:
                targets[b] = state_targets(torch.from_numpy(notes[b:b + 1]))[0].numpy()
        return torch.from_numpy(audio), torch.from_numpy(notes), torch.from_numpy(targets)


def _midi_events(data: bytes) -> np.ndarray | None:
    """(start, end, pitch) rows of a MIDI file's pitched notes, or None without pretty_midi (the GPU image)."""
    try:
        from openmrt.data.heldout import midi_bytes_notes

        return np.array(midi_bytes_notes(data), np.float64).reshape(-1, 3)
    except ImportError:
        return None


def frame_centres(frames: int) -> np.ndarray:
    """Clip-relative time (s) of the centre of each of the decoder's 8·frames grid frames."""
    return (HOP * np.arange(frames * FRAMES_PER_TOKEN) + WIN // 2 - PAD) / SAMPLE_RATE


def event_targets(events: np.ndarray, start_s: float, frames: int) -> np.ndarray:
    """Exact targets [2, 8·frames, 128] of a crop starting at ``start_s``: a note sounds in a grid frame whose
    centre lies in [start, end); it starts in the frames whose centres lie within one hop of its start."""
    t = frame_centres(frames) + start_s
    out = np.zeros((2, len(t), PITCHES), np.float32)
    near = events[(events[:, 1] > t[0] - 0.01) & (events[:, 0] < t[-1] + 0.01)]
    for s, e, p in near:
        out[0, (t >= s) & (t < e), int(p)] = 1
        out[1, np.abs(t - s) <= HOP / SAMPLE_RATE, int(p)] = 1
    return out


def state_targets(notes: torch.Tensor) -> torch.Tensor:
    """25 Hz note states [B, K, 128] -> targets [B, 2, 8K, 128] (sounding, starting) placed by token frame."""
    on = frame_pitch_targets(notes)
    start = frame_pitch_targets((notes == NOTE_ONSET).to(torch.int8))
    return torch.stack([on, start], 1)


def mel_bands(bands: int = 128) -> torch.Tensor:
    """[1081, bands] triangular mel filters (HTK mel, unit peak) over the grid's bins; written here rather than
    taken from librosa because the GPU image has no librosa (scripts/device_train.sh)."""
    mel = 2595 * np.log10(1 + np.arange(WIN // 2 + 1) * SAMPLE_RATE / WIN / 700)
    edges = np.linspace(0, mel[-1], bands + 2)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    w = np.maximum(0, np.minimum((mel - lo) / (mid - lo), (hi - mel) / (hi - mid)))
    w[w.sum(1) == 0, np.argmin(np.abs(mel[None] - mid), 1)[w.sum(1) == 0]] = 1  # bands narrower than a bin
    return torch.from_numpy((w / w.sum(1, keepdims=True)).T.astype(np.float32))


BAND_FLOOR = 1e-7  # sinusoid units: about the floor of the mel L1 metric (1e-5 on raw STFT magnitudes)


def spectral_losses(pred: torch.Tensor, target: torch.Tensor, bands: torch.Tensor | None = None) -> dict:
    """Compressed-magnitude L1, spectral convergence, log-magnitude L1 and (with ``bands``) log mel-band L1 of
    grid magnitudes [B, 2, F, 1081]."""
    pred, target = pred.float(), target.float()
    comp = (pred.clamp(min=0) + 1e-7).pow(0.3) - target.pow(0.3)
    sc = torch.linalg.vector_norm(pred - target, dim=(1, 2, 3)) / torch.linalg.vector_norm(
        target, dim=(1, 2, 3)).clamp(min=1e-4)
    log = (torch.log(pred + LOG_FLOOR) - torch.log(target + LOG_FLOOR)).abs().mean()
    out = {"comp": comp.abs().mean(), "sc": sc.mean(), "logmag": log}
    if bands is not None:
        out["mel"] = (torch.log(pred.clamp(min=0) @ bands + BAND_FLOOR) - torch.log(target @ bands + BAND_FLOOR)
                      ).abs().mean()
    return out


class AutoEncoder(nn.Module):
    """The training forward (DDP wraps it): audio -> latents -> VQ (straight-through) -> magnitudes."""

    def __init__(self, codec: CodecV2, learner: CodebookLearner):
        super().__init__()
        self.codec, self.learner = codec, learner

    def forward(self, target: torch.Tensor, keep: torch.Tensor, long: torch.Tensor | None = None):
        z, salience = self.codec.encoder.features(target, long)
        q = None
        z_dec = z
        if bool(self.learner.initialised):
            z_dec, q = self.learner.quantize(z.float(), keep)
        # without a fixed onset lift: the losses must not teach the decoder to cancel it (harmonic.py)
        return {**self.codec.decode_magnitudes(z_dec.to(z.dtype), attack=False), "salience": salience}, z, q


# ------------------------------------------------------------------------------------ output EQ


@torch.no_grad()
def fit_output_gain(model: CodecV2, clips: list, iterations: int = 3, batch: int = 4) -> list[float]:
    """Fit ``model.out_gain`` (in place) so that decoded clips have the originals' level in every mel band.

    The L1-type losses estimate medians of compressed magnitudes, and the decoder comes out ~0.35 nats
    quieter than its input in almost every band. Per band of the mel L1 metric (2048-point STFT, 128 bands),
    the median of log mel(decoded) − log mel(original) over all clip frames is the L1-best constant
    correction; it is interpolated over the grid's bins at the bands' centre frequencies and refined
    ``iterations`` times (the phase head makes the response not quite linear). ``clips``: TRAINING clips
    (heldout_clips of the training shards), never the evaluation set. Returns the mean mel L1 before each
    iteration and after the last."""
    import librosa

    from openmrt.spectral import MEL_BANDS, MEL_FFT, log_mel

    was = model.training
    model.eval()
    device = model.out_gain.device
    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=MEL_FFT, n_mels=MEL_BANDS, fmin=0.0, fmax=SAMPLE_RATE / 2)
    centres = (fb @ np.fft.rfftfreq(MEL_FFT, 1 / SAMPLE_RATE)) / fb.sum(1)
    bins = np.fft.rfftfreq(WIN, 1 / SAMPLE_RATE)
    mags = []
    for i in range(0, len(clips), batch):  # the decoder's magnitudes do not depend on the gain: once
        x = torch.from_numpy(np.stack([c.audio for c in clips[i:i + batch]])).to(device)
        codes = model.quantizer.encode(model.encoder(*model.encoder_inputs(x)), model.config.num_quantizers)
        mags.append((x, model.decode_magnitudes(model.quantizer.decode(codes))["mag"].float()))
    offset, history = np.zeros(MEL_BANDS), []
    for it in range(iterations + 1):
        diff = []
        for x, mag in mags:
            y = model.magnitudes_to_audio(mag)
            diff.append((log_mel(y) - log_mel(x[:, : y.shape[1]])).cpu().numpy())  # [B·2, bands, T]
        d = np.concatenate(diff)
        history.append(float(np.abs(d).mean()))
        if it == iterations:
            break
        offset -= np.median(d, axis=(0, 2))
        model.out_gain.copy_(torch.from_numpy(np.interp(bins, centres, offset)).float())
    model.train(was)
    return history


def add_gain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--codec", required=True, help="a codec v2 file (e.g. RUN/codec_v2.safetensors)")
    p.add_argument("--data", nargs="+", required=True, help="its TRAINING shard folder(s), not the evaluation set")
    p.add_argument("-o", "--out", required=True, help="where to write the calibrated file")
    p.add_argument("--clips", type=int, default=48, help="8 s clips, one per example, from the folders in turn")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)


def run_calibrate(args: argparse.Namespace) -> dict:
    """``openmrt train codec2-gain``: fit the output EQ of a codec v2 file on training clips and write the file
    with it (weights unchanged, same precision on disk)."""
    from safetensors import safe_open

    from openmrt.codec.v2 import load_codec_v2
    from openmrt.data.heldout import heldout_clips
    from openmrt.weights import read_metadata

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_codec_v2(args.codec)
    per = -(-args.clips // len(args.data))
    clips = [c for root in args.data for c in heldout_clips(root, per, 8.0, per_example=1)][: args.clips]
    if not clips:
        raise DataError(f"no 8 s clips in {args.data}")
    model.out_gain.zero_()
    history = fit_output_gain(model, clips, args.iterations)
    meta = read_metadata(args.codec, "codec v2")
    extra = {k: v for k, v in meta.items() if k not in ("kind", "format", "config")}
    extra["output_gain"] = json.dumps({"clips": len(clips), "data": [Path(d).name for d in args.data],
                                       "mel_l1_train": [round(h, 4) for h in history]})
    with safe_open(str(args.codec), "pt") as f:
        half = any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
    save_codec_v2(model, args.out, extra=extra, dtype=torch.float16 if half else torch.float32)
    db = model.out_gain * (20 / math.log(10))
    res = {"clips": len(clips), "mel_l1_train": history, "gain_db_range": [round(float(db.min()), 2),
                                                                          round(float(db.max()), 2)]}
    print(json.dumps(res))
    return res


# ------------------------------------------------------------------------------------ the loop


def warm_start(model: CodecV2, learner: CodebookLearner, path: str | Path) -> None:
    """Weights and codebook statistics of an earlier run's last.pt (a new optimizer), or the weights of a codec
    v2 file (e.g. the shipped one: its codebooks seed the EMA statistics). Parts the earlier design lacked keep
    their fresh initialisation; a layer that grew inputs keeps its old columns and starts the new ones at 0, so
    the warm-started codec decodes as the earlier one did at step 0."""
    from openmrt.codec.v2 import is_codec_v2_file

    if is_codec_v2_file(path):
        from openmrt.weights import load_tensors

        weights, learned = {k: v.float() for k, v in load_tensors(path, "codec v2")[0].items()}, None
    else:
        state = load_checkpoint(Path(path))
        weights, learned = state["model"], state["learner"]
    own = model.state_dict()
    for k, v in weights.items():
        if k not in own:
            continue
        if own[k].shape == v.shape:
            own[k] = v
        elif own[k].dim() == 2 and own[k].shape[0] == v.shape[0] and own[k].shape[1] > v.shape[1]:
            w = torch.zeros_like(own[k])  # token_in: old per-frame features first in each frame's block
            old_f = v.shape[1] // FRAMES_PER_TOKEN
            new_f = own[k].shape[1] // FRAMES_PER_TOKEN
            for f in range(FRAMES_PER_TOKEN):
                w[:, f * new_f:f * new_f + old_f] = v[:, f * old_f:(f + 1) * old_f]
            own[k] = w
    model.load_state_dict(own)
    if learned is not None:
        learner.load_state_dict(learned)
        return
    with torch.no_grad():  # as if every code had been used once at its current place
        learner.cluster_size.fill_(1.0)
        learner.embed_sum.copy_(learner.codebook[: learner.levels])
        learner.initialised.fill_(True)


def train(args: argparse.Namespace) -> dict:
    d = setup_distributed(None if args.device in (None, "auto") else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    cfg = CodecV2Config(decoder=args.decoder, latent_dim=args.latent_dim, width=args.width,
                        frame_width=args.frame_width, groups=args.groups,
                        salience_dilations=tuple(args.salience_dilations), long_window=args.long_window,
                        attack_frames=args.attack_frames,
                        attack_lift=tuple(args.attack_lift))
    levels = args.levels
    torch.manual_seed(args.seed)
    model = CodecV2(cfg).to(d.device).train()
    learner = CodebookLearner(model.quantizer, levels, args.ema_decay, args.restart_every).to(d.device)
    frozen = ("quantizer", "encoder") if args.freeze_encoder else ("quantizer",)
    params = [p for n, p in model.named_parameters() if not n.startswith(frozen)]
    if args.freeze_encoder:  # the tokens stay what they were: an LM trained on them meanwhile stays valid
        model.encoder.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.8, 0.99), weight_decay=0.0)
    step = 0
    ckpt = out / "last.pt"
    if not ckpt.exists() and args.init:
        warm_start(model, learner, args.init)
        if d.main:
            print(f"starting from the weights and codebooks of {args.init}", flush=True)
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        if state.get("config") != cfg.to_json():
            raise DataError(f"{ckpt} was trained with another configuration ({state.get('config')}); "
                            "use the same flags to resume, or a new --out")
        model.load_state_dict({"out_gain": torch.zeros_like(model.out_gain), **state["model"]})  # older runs: flat
        learner.load_state_dict(state["learner"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        set_rng_state(state["rng"])
        if d.main:
            print(f"resuming {ckpt} at step {step}", flush=True)
    data = ShardAudio(args.data, min_frames=args.crop)
    judge = None
    if args.eval_data and d.main:
        from openmrt.eval.codec import HeldoutJudge  # the held-out judge needs the data tools (not the GPU image)

        judge = HeldoutJudge(args.eval_data, args.eval_clips, args.eval_seconds, args.eval_onsets)
    net: nn.Module = AutoEncoder(model, learner)
    if d.world > 1:
        ids = [d.local_rank] if d.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
    log, eval_log = CSVLog(out / "log.csv", enabled=d.main), CSVLog(out / "eval.csv", enabled=d.main)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)
    pos_weight = torch.tensor(args.pitch_pos_weight, device=d.device)  # ~4 % of pitch-frames sound: calibrate
    onset_weight = torch.tensor(args.onset_pos_weight, device=d.device)  # ~0.2 % start
    bands = mel_bands().to(d.device) if args.mel_weight > 0 else None
    last: dict = {}
    t0 = last_ckpt = time.perf_counter()
    stop = min(args.steps, args.stop_after or args.steps)
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else math.inf
    while step < stop:
        lr = budget_lr(step, args, t0)
        for g in opt.param_groups:
            g["lr"] = lr
        if step >= args.vq_start and not bool(learner.initialised):
            with torch.no_grad():  # k-means on latents of a briefly trained encoder (a random one's collapse)
                zs = [model.encoder(*model.encoder_inputs(data.batch(
                    np.random.default_rng([args.seed, 10**9 + j, d.rank]), args.batch, args.crop)[0].to(d.device)
                )).flatten(0, 1) for j in range(args.kmeans_batches)]
            learner.kmeans_init(torch.cat(zs).float(), seed=args.seed)
        rng = np.random.default_rng([args.seed, step, d.rank])
        audio, _, targets = data.batch(rng, args.batch, args.crop)
        audio, targets = audio.to(d.device), targets.to(d.device)
        keep = keep_levels(rng, args.batch, levels, args.quantizer_dropout).to(d.device)
        with torch.no_grad():
            target, long = model.encoder_inputs(audio)
        with autocast:
            out_, z, q = net(target, keep, long)
        spec = spectral_losses(out_["mag"], target, bands)
        bce = F.binary_cross_entropy_with_logits
        pitch = bce(out_["pitch_logits"].float(), targets[:, 0], pos_weight=pos_weight)
        onset = bce(out_["onset_logits"].float(), targets[:, 1], pos_weight=onset_weight)
        salience = bce(out_["salience"].float(), targets[:, 0], pos_weight=pos_weight)
        commit = F.mse_loss(z.float(), q["quantized"]) if q is not None else z.new_zeros(()).float()
        loss = (spec["comp"] + args.sc_weight * spec["sc"] + args.logmag_weight * spec["logmag"]
                + args.mel_weight * spec.get("mel", 0.0) + args.commit_weight * commit
                + args.pitch_weight * (pitch + onset + salience))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        restarts = learner.update(q, torch.Generator().manual_seed(args.seed * 1_000_003 + step)) \
            if q and not args.freeze_encoder else 0
        step += 1
        now = time.perf_counter()
        if d.main and (step % args.log_every == 0 or step == stop):
            last = {"step": step, "lr": lr, "loss": loss.item(), **{k: v.item() for k, v in spec.items()},
                    "pitch": pitch.item(), "onset": onset.item(), "salience": salience.item(),
                    "commit": commit.item(), "restarts": restarts,
                    "sec": round(now - t0, 1)}
            log.write(last)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in last.items()}), flush=True)
        timed_out = now >= deadline
        if judge is not None and bool(learner.initialised) and (step % args.eval_every == 0 or step == stop
                                                                or timed_out):
            m = judge(model, levels)
            ev = {"step": step, "sec": round(now - t0, 1),
                  **{k: v for k, v in m.items() if isinstance(v, float | int)},
                  **{f"perplexity_l{i}": p for i, p in enumerate(m["perplexity"])}}
            eval_log.write(ev)
            print(json.dumps({"eval": ev}), flush=True)
        if d.main and (step % args.ckpt_every == 0 or step == stop or timed_out
                       or now - last_ckpt >= 60 * args.ckpt_minutes):
            save_checkpoint(ckpt, model=model, learner=learner, optimizer=opt, step=step, config=cfg.to_json())
            save_codec_v2(model, out / "codec_v2.safetensors", extra={"step": step})
            last_ckpt = now
        if timed_out:
            break
    cleanup_distributed()
    return last


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, help="training shard folder(s) (openmrt data compose)")
    p.add_argument("--eval-data", help="held-out shard folder (not in --data) for the periodic evaluation")
    p.add_argument("--out", required=True, help="run folder: last.pt, codec_v2.safetensors, log.csv, eval.csv")
    p.add_argument("--decoder", choices=("harmonic", "plain"), default="harmonic",
                   help="harmonic-plus-noise synthesiser, or the plain regression baseline")
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--width", type=int, default=256, help="channels of the 25 Hz layers")
    p.add_argument("--frame-width", type=int, default=128, help="channels of the 200 Hz layers")
    p.add_argument("--groups", type=int, default=4, help="timbre groups of the harmonic decoder")
    p.add_argument("--salience-dilations", type=int, nargs="*", default=[1, 2, 4, 8],
                   help="the encoder salience's causal time stack over past frames (none: per frame, rounds 2-4)")
    p.add_argument("--long-window", action=argparse.BooleanOptionalAction, default=False,
                   help="the salience also reads a causal 8640-sample window (5.6 Hz bins; round 7)")
    p.add_argument("--attack-frames", type=int, default=16,
                   help="frames (5 ms) the decoder's onset lift lasts, decaying (1: one frame, rounds 2-4; 8: round 5)")
    p.add_argument("--attack-lift", type=float, nargs="*", default=[1.0, 0.9, 4000.0], metavar="PEAK DECAY TOP_HZ",
                   help="a fixed onset lift: peak gain, decay a frame, highest partial it lifts (none: learned, "
                   "rounds 2-5)")
    p.add_argument("--levels", type=int, default=12, help="RVQ levels")
    p.add_argument("--steps", type=int, default=20000, help="length of the LR schedule")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=32, help="token frames per example (25 = 1 s)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--sc-weight", type=float, default=1.0)
    p.add_argument("--logmag-weight", type=float, default=0.1)
    p.add_argument("--pitch-weight", type=float, default=1.0, help="weight of the pitch-gate BCE against the notes")
    p.add_argument("--pitch-pos-weight", type=float, default=2.0, help="BCE weight of sounding pitch-frames")
    p.add_argument("--onset-pos-weight", type=float, default=20.0, help="BCE weight of starting pitch-frames")
    p.add_argument("--mel-weight", type=float, default=0.5, help="weight of the log mel-band L1 (low floor)")
    p.add_argument("--init", help="start from an earlier run's last.pt (weights, codebooks; new optimizer) or a "
                   "codec v2 file")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only (encoder and codebooks "
                   "fixed, so tokens made with them stay valid); use with --init")
    p.add_argument("--commit-weight", type=float, default=1.0)
    p.add_argument("--quantizer-dropout", type=float, default=0.5)
    p.add_argument("--ema-decay", type=float, default=0.98)
    p.add_argument("--restart-every", type=int, default=200)
    p.add_argument("--kmeans-batches", type=int, default=32)
    p.add_argument("--vq-start", type=int, default=300, help="unquantized steps before the codebook's k-means init")
    p.add_argument("--eval-clips", type=int, default=20)
    p.add_argument("--eval-seconds", type=float, default=8.0)
    p.add_argument("--eval-onsets", action="store_true", help="also note-onset F1 after the phase head (basic-pitch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--ckpt-minutes", type=float, default=3.0, help="also checkpoint after this many minutes")
    p.add_argument("--stop-after", type=int, help="stop at this step (the schedule still spans --steps)")
    p.add_argument("--max-minutes", type=float, help="stop (evaluate, checkpoint) after this much wall time")
    p.add_argument("--time-schedule", action="store_true", help="with --max-minutes: the LR decays over the time "
                   "budget instead of --steps (a time-boxed run on a machine of unknown speed; not reproducible)")


"""Does turning up notes guidance make a model follow the notes harder? A synthetic check.

    python scripts/notes_adherence.py --out RUN [--steps 1200] [--distill-steps 400] [--device cuda]

Token shards where each frame's 12 codes are a fixed function of its note with probability 0.5
and a fixed distractor otherwise, with pitches drawn afresh every frame from 6 (so the past does
not give the note away). A teacher is trained on them with the training augmentations
(`openmrt train lm`), then a student is distilled from it with random guidance scales
(`--distill-from`). Adherence = the level-0 probability of the note's own code on held-out
shards: for the teacher under batched CFG at notes scale s, for the student with one row and the
notes-scale token at s. A model that ignores the notes scores 0.5 / 6 = 0.083; one that reads
them, 0.5 at s = 0, rising towards 1 as s grows. Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from openmrt import tokens as tk
from openmrt.cli import main as cli
from openmrt.data.labels import Labels
from openmrt.data.shards import Example, write_index, write_shard
from openmrt.lm.checkpoint import load_lm
from openmrt.train.guidance import guided_logits

PITCHES = (60, 62, 64, 65, 67, 69)
DISTRACTOR = (np.arange(12) * 53 + 301) % 1024


def note_codes(pitch: int) -> np.ndarray:
    return (pitch * 13 + np.arange(12) * 97) % 1024


def make_shards(root: Path, examples: int, frames: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    exs, tokens, pool = [], [], []
    for e in range(examples):
        pitch = rng.choice(PITCHES, size=frames)
        notes = np.zeros((frames, 128), np.int8)
        notes[np.arange(frames), pitch] = tk.NOTE_ONSET
        follow = rng.random(frames) < 0.5
        codes = np.where(follow[:, None], np.stack([note_codes(p) for p in pitch]), DISTRACTOR).astype(np.int16)
        drums = np.zeros(frames, np.int8)
        exs.append(Example(np.zeros((2, frames * 1920), np.float32), Labels(notes, drums, {}), {"caption": f"ex{e}"}))
        tokens.append(codes)
        want = np.array([note_codes(p)[0] for p in pitch])
        pool.append({"notes": notes, "drums": drums, "tokens": codes, "want": want})
    write_shard(root / "shard_00000.npz", exs, per_frame={"tokens": tokens})
    write_index(root, {"kind": "synthetic notes adherence"})
    return pool


def batch(pool: list[dict], scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every held-out frame, notes given, style masked, CFG tokens: style 0, notes ``scale``."""
    cfg = {"musiccoca": 0.0, "notes": scale}
    cond = torch.stack([tk.encode_conditioning(np.stack(
        [tk.make_conditioning(None, ex["notes"][t], int(ex["drums"][t]), cfg) for t in range(len(ex["notes"]))]))
        for ex in pool])
    toks = torch.stack([tk.to_unique(torch.as_tensor(ex["tokens"]).long()) for ex in pool])
    want = torch.stack([torch.as_tensor(ex["want"]) for ex in pool])
    return cond, toks, want


def adherence(logits: torch.Tensor, want: torch.Tensor) -> float:
    """Mean level-0 probability of the note's code; logits [B, T, 12, 1024]."""
    return float(torch.softmax(logits[..., 0, :].float(), -1).gather(-1, want[..., None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--distill-steps", type=int, default=400)
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 3.0, 5.0])
    ap.add_argument("--device")
    args = ap.parse_args()
    train = args.out / "shards"
    make_shards(train, args.examples, 100, seed=5)
    held = make_shards(args.out / "heldout", 8, 100, seed=99)
    dev = ["--device", args.device] if args.device else []
    common = ["--data", str(train), "--batch", "8", "--crop", "24", "--log-every", "50", "--holdout", "0",
              "--eval-every", str(10**9), *dev]
    teacher_file, student_file = args.out / "teacher" / "lm.safetensors", args.out / "student" / "lm.safetensors"
    if not teacher_file.exists():
        cli(["train", "lm", *common, "--out", str(teacher_file.parent), "--model", args.model, "--steps",
             str(args.steps), "--lr", "3e-3", "--warmup", "10", "--ckpt-every", str(args.steps)])
    if not student_file.exists():
        cli(["train", "lm", *common, "--out", str(student_file.parent), "--init", str(teacher_file), "--distill-from",
             str(teacher_file), "--steps", str(args.distill_steps), "--lr", "1e-3", "--warmup", "5",
             "--ckpt-every", str(args.distill_steps)])
    teacher, student = load_lm(teacher_file).eval(), load_lm(student_file).eval()
    with torch.no_grad():
        for s in args.scales:
            cond, toks, want = batch(held, s)
            row = {"notes_scale": s, "teacher_cfg": adherence(guided_logits(teacher, cond, toks), want),
                   "teacher_one_row": adherence(teacher.training_logits(cond, toks), want),
                   "student_token": adherence(student.training_logits(cond, toks), want)}
            print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()

"""Held-out figures of a style model: style retrieval from text (plain and through the mapper), caption recall@5,
RVQ round trip. Used by `openmrt style eval` and recorded in docs/models.md.

Definitions (all on held-out shard folders, 10 s windows at a 5 s hop):
* style_top1_text / _mapper: each window's style is guessed as the style whose prompt (its label, e.g. "disco funk")
  embeds nearest (cosine); the prompt embedding is the plain text embedding, or the mapper's one-step sample (seed 0;
  `_mapper_seeds` averages seeds 0..9). Over the styles present in the held-out set, out of all data-engine styles.
* decoded_* : the same prompts quantised to 12 tokens and dequantised (what the LM would be conditioned on); the
  decoded embedding's 10 nearest held-out windows: fraction of the prompted style (precision@10), averaged over styles.
* caption_recall@5: per held-out example, its full caption ranks the examples (window embeddings averaged); hit when
  its own example is in the top 5. Chance is 5 / examples.
* rvq_cos: cosine(window embedding, dequantised tokens), mean / 5th percentile / min; rvq6_* with the coarsest 6
  levels only (the live engine masks levels 6..11).
"""

from __future__ import annotations

import numpy as np

from openmrt.data.styles import STYLES
from openmrt.style.data import audio_bank, style_label, text_views
from openmrt.style.features import FRAMES_PER_SECOND
from openmrt.style.model import StyleModel

__all__ = ["evaluate"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _classify(audio: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    return (audio @ _unit(prompts).T).argmax(1)


def evaluate(model: StyleModel, examples, hop_seconds: float = 5.0) -> dict:
    frames = int(model.cfg.clip_seconds * FRAMES_PER_SECOND)
    audio, owner = audio_bank(model, examples, frames, hop=int(hop_seconds * FRAMES_PER_SECOND))
    names = list(STYLES)
    styles = np.array([names.index(examples[k].style) for k in owner])
    present = sorted(set(styles.tolist()))
    text = model.text_embeddings([style_label(n) for n in names])
    res: dict = {"windows": len(audio), "examples": len(examples), "styles_present": len(present),
                 "styles_total": len(names)}
    res["style_top1_text"] = float(np.mean(_classify(audio, text) == styles))
    res["decoded_p10_text"] = _decoded_subset(model, text, audio, styles, present)
    if model.mapper is not None:
        mapped = model.map_text(text, seed=0)
        res["style_top1_mapper"] = float(np.mean(_classify(audio, mapped) == styles))
        res["style_top1_mapper_seeds"] = float(np.mean([np.mean(_classify(audio, model.map_text(text, seed=s))
                                                                == styles) for s in range(10)]))
        res["decoded_p10_mapper"] = _decoded_subset(model, mapped, audio, styles, present)
        res["decoded_p10_mapper_seeds"] = float(np.mean([_decoded_subset(model, model.map_text(text, seed=s), audio,
                                                                         styles, present) for s in range(10)]))
        cent = _unit(np.stack([audio[styles == i].mean(0) for i in present]))
        res["cos_to_style_centroid_text"] = float(np.mean((_unit(text[present]) * cent).sum(1)))
        res["cos_to_style_centroid_mapper"] = float(np.mean((mapped[present] * cent).sum(1)))
    ex_emb = _unit(np.stack([audio[owner == k].mean(0) for k in range(len(examples))]))
    caps = model.text_embeddings([text_views(e.meta)["caption"] for e in examples])
    rank = np.argsort(-(caps @ ex_emb.T), axis=1)
    res["caption_recall@5"] = float(np.mean([k in rank[k, :5] for k in range(len(examples))]))
    res["caption_recall@1"] = float(np.mean(rank[:, 0] == np.arange(len(examples))))
    if model.codebooks is not None:
        toks = np.stack([model.tokenize(a) for a in audio])
        for name, lv in (("rvq", None), ("rvq6", 6)):
            cos = (_unit(model.dequantize(toks, lv)) * audio).sum(1)
            res |= {f"{name}_cos_mean": float(cos.mean()), f"{name}_cos_p5": float(np.percentile(cos, 5)),
                    f"{name}_cos_min": float(cos.min())}
    return res


def _decoded_subset(model: StyleModel, prompts: np.ndarray, audio: np.ndarray, styles: np.ndarray,
                    present: list[int], k: int = 10) -> float:
    """decoded precision@k over the prompts of the styles present in the held-out set."""
    dec = _unit(model.dequantize(np.stack([model.tokenize(prompts[i]) for i in present])))
    top = np.argsort(-(dec @ audio.T), axis=1)[:, :k]
    return float(np.mean(styles[top] == np.array(present)[:, None]))

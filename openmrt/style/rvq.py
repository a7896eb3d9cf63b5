"""Residual vector quantiser for style embeddings: 12 levels × 1024 codes, fitted with k-means per level, then frozen.

Level q quantises what the levels before it left over (greedy nearest code, Euclidean), so the sum of the chosen
codes approximates the embedding more closely with every level; the LM then sees the 12 code indices.
"""

from __future__ import annotations

import numpy as np

from openmrt.errors import ConfigError

__all__ = ["fit_rvq", "rvq_decode", "rvq_encode"]


def fit_rvq(x: np.ndarray, levels: int = 12, codes: int = 1024, seed: int = 0, batch_size: int = 4096,
            max_iter: int = 100) -> np.ndarray:
    """k-means per level on the residuals of `x` [N, D] -> codebooks float32 [levels, codes, D].

    N must be at least `codes` (k-means cannot place more centres than points).
    """
    from sklearn.cluster import MiniBatchKMeans

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < codes:
        raise ConfigError(f"fit_rvq: need [N >= {codes}, D] embeddings, got shape {x.shape}")
    books = np.zeros((levels, codes, x.shape[1]), dtype=np.float32)
    resid = x.copy()
    for q in range(levels):
        km = MiniBatchKMeans(n_clusters=codes, batch_size=batch_size, max_iter=max_iter, n_init=1,
                             random_state=seed + q).fit(resid)
        books[q] = km.cluster_centers_.astype(np.float32)
        resid -= books[q][_nearest(resid, books[q])]
    return books


def _nearest(x: np.ndarray, book: np.ndarray) -> np.ndarray:
    """Index of the nearest code (squared Euclidean) for each row of x [N, D] in book [K, D]."""
    d = (book**2).sum(1)[None, :] - 2.0 * x @ book.T  # ||x||^2 is the same for every code
    return d.argmin(axis=1)


def rvq_encode(x: np.ndarray, books: np.ndarray) -> np.ndarray:
    """[..., D] -> int64 [..., levels] greedy residual codes."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] != books.shape[-1]:
        raise ConfigError(f"rvq: embedding width {x.shape[-1]} != codebook width {books.shape[-1]}")
    resid = x.reshape(-1, x.shape[-1]).copy()
    out = np.zeros((len(resid), len(books)), dtype=np.int64)
    for q, book in enumerate(books):
        out[:, q] = _nearest(resid, book)
        resid -= book[out[:, q]]
    return out.reshape(*x.shape[:-1], len(books))


def rvq_decode(codes: np.ndarray, books: np.ndarray, levels: int | None = None) -> np.ndarray:
    """int [..., L] -> float32 [..., D]: the sum of the first `levels` chosen codes (all by default)."""
    c = np.asarray(codes)
    n = c.shape[-1] if levels is None else levels
    return sum(books[q][c[..., q]] for q in range(n)).astype(np.float32)

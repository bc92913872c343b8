"""The four scores a sentence-transformers model can name (``similarity_fn_name``), larger meaning closer.

    cosine      a.b / (|a| |b|)           the usual choice; for unit vectors the same as dot
    dot         a.b                       models trained for it (e.g. msmarco's "-dot-" models): length matters
    euclidean   -|a - b|                  distances are negated, so that larger is still closer
    manhattan   -sum |a_i - b_i|

``similarity(a, b)`` scores every row of ``a`` against every row of ``b``; ``pairwise(a, b)`` row i against
row i. Both compute in float32 (at least), as sentence-transformers does.
"""

from __future__ import annotations

import enum

import numpy as np
import torch
import torch.nn.functional as F


def embeddings(x: np.ndarray | torch.Tensor | list, what: str = "embeddings") -> torch.Tensor:
    """A vector or rows as a float tensor of at least float32 precision. A list becomes a tensor as
    ``torch.tensor`` makes it, which sentence-transformers calls (Python floats: float32). Integer embeddings
    (``encode(precision=...)``'s int8 or packed bits) are refused: their cosine or dot product here would be
    that of the codes, not of the embeddings."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (torch.Tensor, np.ndarray)):
        x = torch.stack([torch.as_tensor(row) for row in x])
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        raise ValueError(f"{what}: expected float embeddings, got {t.dtype}")
    if t.ndim not in (1, 2):
        raise ValueError(f"{what}: expected a vector or an (n, dim) matrix of embeddings, got shape {tuple(t.shape)}")
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def matrix(x: np.ndarray | torch.Tensor | list, what: str = "embeddings") -> torch.Tensor:
    """``embeddings``, a single vector as one row."""
    t = embeddings(x, what)
    return t[None] if t.ndim == 1 else t


def matrices(a, b) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both as ``matrix`` makes them, in one dtype (float64 where either is), with as many dimensions; and
    whether both were vectors."""
    a, b = embeddings(a, "a"), embeddings(b, "b")
    vectors = a.ndim == b.ndim == 1
    a, b = (t[None] if t.ndim == 1 else t for t in (a, b))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} dimensions but b {b.shape[1]}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype), vectors


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, p=2, dim=-1) @ F.normalize(b, p=2, dim=-1).T


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b.T


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(a, b, p=2.0)


def manhattan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(a, b, p=1.0)


SIMILARITIES = {"cosine": cosine, "dot": dot, "euclidean": euclidean, "manhattan": manhattan}
PAIRWISE = {
    "cosine": lambda a, b: (F.normalize(a, p=2, dim=-1) * F.normalize(b, p=2, dim=-1)).sum(dim=-1),
    "dot": lambda a, b: (a * b).sum(dim=-1),
    "euclidean": lambda a, b: -torch.linalg.vector_norm(a - b, ord=2, dim=-1),
    "manhattan": lambda a, b: -(a - b).abs().sum(dim=-1),
}


def check_name(name: str) -> str:
    """A similarity's name: one of ``SIMILARITIES``, "cos" (cosine's older name here), or a member of
    sentence-transformers' ``SimilarityFunction`` (its value is the name)."""
    name = name.value if isinstance(name, enum.Enum) else name
    name = "cosine" if name == "cos" else name
    if not isinstance(name, str) or name not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {name!r}")
    return name


def similarity(a, b, name: str = "cosine") -> torch.Tensor:
    """(len(a), len(b)) scores."""
    a, b, _ = matrices(a, b)
    return SIMILARITIES[check_name(name)](a, b)


def pairwise(a, b, name: str = "cosine") -> torch.Tensor:
    """(n,) scores of row i of ``a`` with row i of ``b`` (one score, a 0-d tensor, for two vectors)."""
    a, b, vectors = matrices(a, b)
    if a.shape != b.shape:
        raise ValueError(f"pairwise scores need two matrices of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    scores = PAIRWISE[check_name(name)](a, b)
    return scores[0] if vectors else scores


def cos_sim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
    """Cosine similarity matrix between the rows of ``a`` and ``b`` (default: ``a`` with itself), as
    sentence-transformers' ``util.cos_sim``, but a NumPy array where ``a`` is one (as ``encode`` gives it)."""
    sim = similarity(a, a if b is None else b, "cosine")
    return sim.numpy() if isinstance(a, np.ndarray) else sim

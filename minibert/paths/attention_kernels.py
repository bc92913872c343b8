"""The fast path's CPU attention, on the (B, L) grid: the products written out (``model.py``'s sums, in fewer
operators) or SDPA's fused CPU kernel, whichever is faster here by ``MARGIN``, measured once per dtype as the linear
kernels are (``kernels.py``); ``ATTENTION_CHOSEN`` holds the choices, ``MINIBERT_CPU_ATTENTION`` forces
one. MPNet's bias and attention dropout always take the products, as in the reference.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from minibert.paths import kernels

ATTENTION_CHOSEN: dict[torch.dtype, str] = {}  # dtype -> how the fast path's CPU attention runs: "products" or "sdpa"
ATTENTIONS = ("products", "sdpa")  # the ways the fast path's CPU attention can run
HALF_DTYPES = (torch.bfloat16, torch.float16)


def products_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
                       bias: torch.Tensor | None = None, dropout_p: float = 0.0,
                       terms: dict | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + bias, masked) v, written out: q, k, v (B, H, L, D); ``keep`` (B, 1, 1, L) bool
    (True: a real key) or None; attention dropout ``dropout_p`` on the probabilities. The same sums as
    ``model.py``'s, in fewer operators: the mask and the bias are one additive term (``scores_term``), added with
    the scaled scores in one batched product (``baddbmm``); and without dropout the keys are padded to whole
    vectors: 64 bytes' worth of scores (16 in float32, 32 in bf16). PyTorch's CPU softmax runs vector code
    along a row and scalar code on what is left over, so a row of 12 float32 scores is all leftover and takes
    several times as long as a row of 16; the padded keys are masked, so the result is the same. ``terms``: a
    dict that keeps the additive term for the next call with the same mask and bias (every layer of a forward).

    In a half dtype without a bias, outside autocast, the scores and softmax are float32, as SDPA's fused kernel
    (the reference's attention there) keeps them; only the probabilities are rounded, for the product with v.
    Rounded to bf16, a score of 10 would move by up to 1/32 and its probability by 3%. With a bias (MPNet) the
    products run in q's dtype, as the reference's written-out products do (and transformers'); under autocast
    (training) in autocast's dtype, as ``model.py``'s written-out products run there. In bf16 where bf16
    linears are upcast (no bf16 instructions), everything runs in float32 and is rounded back."""
    if q.dtype == torch.bfloat16 and kernels.CHOSEN.get(torch.bfloat16) == "upcast":
        with torch.autocast("cpu", enabled=False):
            y = products_attention(q.float(), k.float(), v.float(), keep, bias, dropout_p, terms)
        return y.to(q.dtype)
    B, H, L, D = q.shape
    keys = k.shape[2]
    autocast = torch.is_autocast_enabled(q.device.type)
    float32_scores = bias is None and q.dtype in HALF_DTYPES and not autocast
    if float32_scores:
        dtype = torch.float32
    else:
        dtype = q.dtype if bias is None else torch.promote_types(q.dtype, bias.dtype)  # (a float32 bias: float32)
    if dropout_p == 0.0:  # (with dropout the probabilities keep the reference's shape, and so its random draws)
        extra = -keys % (64 // dtype.itemsize)
        if extra:
            k, v = F.pad(k, (0, 0, 0, extra)), F.pad(v, (0, 0, 0, extra))
        keys += extra
    added = None if terms is None else terms.get((dtype, H, keys))
    if added is None:
        added = scores_term(keep, bias, (B, H, L), keys, dtype, q.device)
        if terms is not None:
            terms[dtype, H, keys] = added
    if float32_scores:  # (upcast before the reshape: one copy of q's strided view, not two)
        q, k = q.float(), k.float()
    q, k = q.reshape(B * H, L, D), k.reshape(B * H, keys, D).transpose(1, 2)
    if dtype == q.dtype and not autocast:
        scores = torch.baddbmm(added, q, k, alpha=D ** -0.5)
    else:  # as model.py adds them: the product in autocast's dtype, then the bias and mask in theirs (a float32
        # bias under bf16 autocast: softmax and dropout in float32, and the mask's lowest value stays finite)
        scores = torch.bmm(q, k) * D ** -0.5 + added
    probabilities = F.dropout(F.softmax(scores, dim=-1), p=dropout_p, training=dropout_p > 0)
    return torch.bmm(probabilities.to(v.dtype), v.reshape(B * H, keys, D)).view(B, H, L, D)


def scores_term(keep: torch.Tensor | None, bias: torch.Tensor | None, shape: tuple[int, int, int], keys: int,
                dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """What is added to the scaled scores of a (B, H, L) batch of queries over ``keys`` keys (the L real and
    padded ones, then the keys added to whole vectors): 0 for a real key, the dtype's lowest value for a padded
    or added one (softmax turns it into a probability of exactly 0), plus the bias (B or 1, H, L, L) if any.
    Shape (B * H, L or 1, keys), as ``baddbmm`` takes it."""
    B, H, L = shape
    extra = keys - L
    if keep is None and extra:
        keep = torch.ones(1, 1, 1, L, dtype=torch.bool, device=device)
    if keep is not None and extra:
        keep = F.pad(keep, (0, extra))  # (False: the added keys are masked)
    if bias is not None and extra:
        bias = F.pad(bias, (0, extra))
    added = torch.zeros(B if keep is not None else 1, 1, 1, keys, dtype=dtype, device=device)
    if keep is not None:
        added.masked_fill_(~keep, torch.finfo(dtype).min)
    if bias is not None:
        added = added + bias  # (B or 1, H, L, keys)
    return added.expand(B, H, added.shape[2], keys).reshape(B * H, added.shape[2], keys)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The same by PyTorch's fused kernel (``scaled_dot_product_attention``; no bias, no dropout here)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def attention_kernel(dtype: torch.dtype) -> str:
    """How the fast path's CPU attention runs in ``dtype``, measured once per process: "products" (written out)
    unless "sdpa" (the fused kernel) beats it by ``MARGIN`` on a batch of sentence-length inputs, 32 sentences
    of at most 32 tokens, a third of them padded, 12 heads of 32. Which wins is the CPU's doing: at these
    lengths the fused kernel's set-up can cost more than it saves, and products in bf16 on a CPU without bf16
    instructions are emulated. ``MINIBERT_CPU_ATTENTION`` (``products`` or ``sdpa``) forces one."""
    if dtype in ATTENTION_CHOSEN:  # chosen already: every attention layer asks, so no lock on this path
        return ATTENTION_CHOSEN[dtype]
    if dtype == torch.bfloat16:
        kernels.linear_kernel(dtype)  # the products run upcast where its linears do: choose that first
    with kernels.MEASURING:
        if dtype not in ATTENTION_CHOSEN:
            forced = os.environ.get("MINIBERT_CPU_ATTENTION")
            if forced is not None and forced not in ATTENTIONS:
                raise ValueError(f"MINIBERT_CPU_ATTENTION={forced!r}: it must be "
                                 + " or ".join(repr(kind) for kind in ATTENTIONS))
            ATTENTION_CHOSEN[dtype] = forced or measure_attention(dtype)
    return ATTENTION_CHOSEN[dtype]


@torch.no_grad()
def measure_attention(dtype: torch.dtype, rounds: int = 5) -> str:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(32, 12, 32, 32, generator=generator).to(dtype) for _ in range(3))
    keep = torch.ones(32, 1, 1, 32, dtype=torch.bool)
    keep[::3, ..., 20:] = False
    candidates = {"products": products_attention, "sdpa": sdpa_attention}
    best = dict.fromkeys(candidates, float("inf"))
    with torch.autocast("cpu", enabled=False):
        for _ in range(rounds):
            for name, kernel in candidates.items():
                best[name] = min(best[name], kernels.seconds(kernel, (q, k, v, keep)))
    return "sdpa" if best["sdpa"] * kernels.MARGIN < best["products"] else "products"

"""bf16 attention written out with its scores in float32 (now) or in bf16 (before): how far each is from
float32, and what each costs in a whole encode, beside SDPA's fused kernel, which keeps the scores in float32.

Encodes STS-B test (2,758 sentences, batch 32) with all-MiniLM-L6-v2 on the fast bf16 path three ways:
the written-out products as they ran before (scores rounded to bf16 by the product), as they run now, and
SDPA. Prints each one's distance from the float32 reference's embeddings, then the three alternating in
one process (``scripts/timing.py``'s rounds), sentences/s, twice.

    python experiments/cpu_attention/float32_scores.py      # about 2 minutes on 2 cores
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import attention_kernels, kernels
from minibert.paths import fast as fast_module

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from timing import alternating_rounds  # noqa: E402


def bf16_scores(q, k, v, keep, bias=None, dropout_p=0.0, terms=None):
    """The written-out attention as it ran before, for inference without a bias: keys padded to 32 (64 bytes
    of bf16 scores), the scores from one bf16 product (rounded to bf16), softmax in bf16."""
    if bias is not None or dropout_p or q.dtype != torch.bfloat16 or kernels.CHOSEN.get(q.dtype) == "upcast":
        return attention_kernels.products_attention(q, k, v, keep, bias, dropout_p, terms)
    B, H, L, D = q.shape
    extra = -L % 32
    k, v = F.pad(k, (0, 0, 0, extra)), F.pad(v, (0, 0, 0, extra))
    added = terms.get((q.dtype, H, L + extra))
    if added is None:  # made once per forward, as products_attention makes its own
        added = terms[q.dtype, H, L + extra] = attention_kernels.scores_term(keep, None, (B, H, L), L + extra,
                                                                             q.dtype, q.device)
    scores = torch.baddbmm(added, q.reshape(B * H, L, D), k.reshape(B * H, L + extra, D).transpose(1, 2),
                           alpha=D ** -0.5)
    return torch.bmm(F.softmax(scores, dim=-1), v.reshape(B * H, L + extra, D)).view(B, H, L, D)


def main(rounds: int = 6, runs: int = 2) -> None:
    torch.set_num_threads(2)
    pairs = read_sts_tsv(Path(default_data_dir()) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    float32 = torch.as_tensor(SentenceEncoder.from_pretrained(DEFAULT_MODEL).encode(sentences, batch_size=32))
    encoder = SentenceEncoder.from_pretrained(DEFAULT_MODEL, dtype=torch.bfloat16, path="fast")
    variants = {"before: bf16 scores": ("products", bf16_scores),
                "now: float32 scores": ("products", attention_kernels.products_attention),
                "SDPA": ("sdpa", attention_kernels.products_attention)}

    def encode(variant: str):
        def run():
            attention_kernels.ATTENTION_CHOSEN[torch.bfloat16], fast_module.products_attention = variants[variant]
            return encoder.encode(sentences, batch_size=32)
        return run

    print("distance from the float32 reference's embeddings")
    for variant in variants:
        got = torch.as_tensor(encode(variant)()).float()
        row_max = (got - float32).abs().amax(1)
        cosine = F.cosine_similarity(got, float32).double()
        print(f"  {variant:22} max |difference| {float(row_max.max()):.4f}, mean of rows' max "
              f"{float(row_max.mean()):.5f}, mean 1 - cosine {float(1 - cosine.mean()):.2e}")
    for run in range(1, runs + 1):
        seconds = alternating_rounds({variant: encode(variant) for variant in variants}, rounds)
        rates = {variant: len(sentences) / statistics.median(times) for variant, times in seconds.items()}
        first = rates["before: bf16 scores"]
        print(f"run {run}, sentences/s (median of {rounds} alternating rounds): "
              + ", ".join(f"{variant} {rate:.1f} ({rate / first:.3f}x)" for variant, rate in rates.items()))
    fast_module.products_attention = attention_kernels.products_attention


if __name__ == "__main__":
    main()

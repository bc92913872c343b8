"""The residual sums of a post-LN block (x + attention_out(...), x + ffn_out(...)) added inside the output
products (oneDNN's binary post-op, now, in inference) against added after them (before), on the fast bf16
and int8 paths: how far each is from float32, and whole encodes alternating in one process.

Encodes STS-B test (2,758 sentences, batch 32) with all-MiniLM-L6-v2; prints each variant's distance from the
float32 reference's embeddings, then sentences/s (median of ``scripts/timing.py``'s alternating rounds), twice.
On the int8 path "now" adds in place into the dequantized output instead of into a new tensor.

    python experiments/fused_blocks/residual_in_product.py      # about 2 minutes on 2 cores
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import kernels, onednn
from minibert.paths.fast import FastEncoderBlock

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from timing import alternating_rounds  # noqa: E402

NOW = FastEncoderBlock.forward


def added_after(self, x, packing, bias=None):
    """The block as it ran before: each sum a pass of its own after the product."""
    x = self.attention_norm(x + self.attention_dropout(self.attention_out(self.attention(x, packing, bias))))
    return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))


def main(rounds: int = 6, runs: int = 2) -> None:
    torch.set_num_threads(2)
    pairs = read_sts_tsv(Path(default_data_dir()) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    reference = SentenceEncoder.from_pretrained(DEFAULT_MODEL)
    float32 = torch.as_tensor(reference.encode(sentences, batch_size=32))
    encoders = {"fast bf16": SentenceEncoder.from_pretrained(DEFAULT_MODEL, dtype=torch.bfloat16, path="fast"),
                "int8": reference.to_path("int8")}
    variants = {"before: added after": added_after, "now: added inside": NOW}

    def encode(encoder, variant):
        def run():
            FastEncoderBlock.forward = variants[variant]
            return encoder.encode(sentences, batch_size=32)
        return run

    for name, encoder in encoders.items():
        for variant in variants:
            got = torch.as_tensor(encode(encoder, variant)()).float()
            row_max = (got - float32).abs().amax(1)
            cosine = F.cosine_similarity(got, float32).double()
            print(f"{name}, {variant:20} max |difference| {float(row_max.max()):.4f}, mean of rows' max "
                  f"{float(row_max.mean()):.5f}, mean 1 - cosine {float(1 - cosine.mean()):.3e}")
        for run in range(1, runs + 1):
            seconds = alternating_rounds({variant: encode(encoder, variant) for variant in variants}, rounds)
            rates = {variant: len(sentences) / statistics.median(times) for variant, times in seconds.items()}
            first = rates["before: added after"]
            print(f"{name}, run {run}, sentences/s (median of {rounds} alternating rounds): "
                  + ", ".join(f"{variant} {rate:.1f} ({rate / first:.3f}x)" for variant, rate in rates.items()))
    FastEncoderBlock.forward = NOW
    print("linear kernels:", {str(dtype).removeprefix("torch."): kernel for dtype, kernel in kernels.CHOSEN.items()},
          "add op:", onednn.ONEDNN_ADD_OP is not None)


if __name__ == "__main__":
    main()

"""Can the blocked kernel's block products run as one oneDNN call? A grouped 1x1 convolution does it: with the
input channels cut into G groups of the block width and G x N output channels, group g's outputs are x's block g
times the weight's block g. The G partial products then sum over the groups, in order, in one pass. Equal to the
blocked kernel bit for bit? And faster?

    python experiments/kernel_accuracy/grouped_blocks.py

Per shape of MiniLM's linears, at 300, 450 and 900 rows (a batch of 32 STS-B sentences holds about 450 tokens):
microseconds per product, best of 9 timings of 20, on 2 threads, for the blocked kernel, oneDNN's whole product
(not a candidate: it is less accurate) and the grouped convolution with its sum.
"""

from __future__ import annotations

import time

import torch

from minibert.paths import onednn
from minibert.paths.allocator import keep_freed_memory

CONVOLUTION = onednn.find_op("mkldnn", "_convolution_pointwise")
PACK_CONVOLUTION = onednn.find_op("mkldnn", "_reorder_convolution_weight")


def microseconds(product, n: int = 20) -> float:
    for _ in range(3):
        product()
    best = float("inf")
    for _ in range(9):
        start = time.perf_counter()
        for _ in range(n):
            product()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def grouped(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """x @ weight.T + bias as one grouped convolution over blocks of ``onednn.BLOCK`` inputs, then the sum."""
    (M, K), N = x.shape, weight.shape[0]
    G = -(-K // onednn.BLOCK)
    width = K // G
    blocks = weight.view(N, G, width).transpose(0, 1).reshape(G * N, width, 1, 1)  # group g: weight's block g
    biases = torch.zeros(G * N)
    biases[:N] = bias  # added to the first block's product, as the blocked kernel adds it
    packed = PACK_CONVOLUTION(blocks.contiguous(), [0, 0], [1, 1], [1, 1], G, [1, K, M, 1])
    image = x.view(1, M, 1, K).permute(0, 3, 1, 2)  # (1, K, M, 1) channels-last: x itself, no copy

    def product() -> torch.Tensor:
        y = CONVOLUTION(image, packed, biases, [0, 0], [1, 1], [1, 1], G, "none", [], "")
        partial = y.permute(0, 2, 3, 1).view(M, G, N)
        return partial[:, 0] + partial[:, 1] if G == 2 else partial.sum(1)
    return product


def main() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    print("rows, (in, out): blocked / oneDNN whole / grouped convolution + sum (us), grouped equal to blocked")
    with torch.inference_mode(False):  # weights whose packed forms are kept, as a model's are
        for M in (300, 450, 900):
            for K, N in ((384, 1152), (384, 384), (384, 1536), (1536, 384)):
                x, weight, bias = torch.randn(M, K), torch.randn(N, K), torch.randn(N)
                convolution = grouped(x, weight, bias)
                products = (lambda x=x, w=weight, b=bias: onednn.blocked_linear(x, w, b),
                            lambda x=x, w=weight, b=bias: onednn.onednn_linear(x, w, b), convolution)
                times = [microseconds(p) for p in products]
                same = torch.equal(convolution(), onednn.blocked_linear(x, weight, bias))
                print(f"{M}, ({K}, {N}): " + " / ".join(f"{t:.0f}" for t in times) + f", {same}")


if __name__ == "__main__":
    main()

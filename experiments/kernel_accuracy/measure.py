"""How far each CPU linear kernel's float32 products lie from the exact ones, on the shapes of MiniLM and
MPNet, and what that does after every layer of a deep model (all-mpnet-base-v2 against transformers).

    python experiments/kernel_accuracy/measure.py [--model weights/all-mpnet-base-v2]

Needs the reference libraries (pip install -e '.[test]') for the second table.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
import torch.nn.functional as F

from minibert.paths import attention_kernels, kernels

SHAPES = [(384, 1536), (384, 384), (768, 3072), (3072, 768), (768, 768)]  # (in, out) of the products


def product_errors(rows: int = 256) -> None:
    """Each kernel's mean and largest error against float64, and its speed (best of 5 timings of 4 calls)."""
    names = kernels.candidates(torch.float32)
    print("| product (rows x in -> out) | " + " | ".join(f"{name} mean / max error, GFLOP/s" for name in names)
          + " |")
    print("|---" * (1 + len(names)) + "|")
    generator = torch.Generator().manual_seed(0)
    for fan_in, fan_out in SHAPES:
        x, weight = torch.randn(rows, fan_in, generator=generator), torch.randn(fan_out, fan_in, generator=generator)
        bias = torch.randn(fan_out, generator=generator)
        exact = F.linear(x.double(), weight.double(), bias.double())
        cells = []
        for name in names:
            with torch.no_grad():
                difference = (kernels.LINEARS[name](x, weight, bias).double() - exact).abs()
                seconds = min(kernels.seconds(kernels.LINEARS[name], (x, weight, bias)) for _ in range(5)) / 4
            cells.append(f"{float(difference.mean()):.2e} / {float(difference.max()):.2e}, "
                         f"{2 * rows * fan_in * fan_out / seconds / 1e9:.0f}")
        print(f"| {rows} x {fan_in} -> {fan_out} | " + " | ".join(cells) + " |")


def sum_lengths(rows: int = 256, fan_out: int = 768) -> None:
    """Where oneDNN's rounding parts from BLAS's: random rows of K products, for K from 64 to 3,072, each
    kernel's mean error against float64 (BLAS's divided by sqrt(K), which stays flat when a kernel adds up
    partial sums of a fixed length), and whether the blocked kernel equals F.linear bit for bit."""
    print("\n| K (products per sum) | BLAS mean error / sqrt(K) | oneDNN / BLAS | blocked / BLAS | blocked = BLAS |")
    print("|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for fan_in in (64, 128, 192, 200, 256, 320, 384, 768, 1024, 1536, 3072):
        x, weight = torch.randn(rows, fan_in, generator=generator), torch.randn(fan_out, fan_in, generator=generator)
        exact = F.linear(x.double(), weight.double())
        with torch.no_grad():
            runs = {name: kernels.LINEARS[name](x, weight, None) for name in ("blas", "onednn", "blocked")}
        errors = {name: float((y.double() - exact).abs().mean()) for name, y in runs.items()}
        print(f"| {fan_in} | {errors['blas'] / fan_in ** 0.5:.3e} | {errors['onednn'] / errors['blas']:.2f} | "
              f"{errors['blocked'] / errors['blas']:.2f} | {torch.equal(runs['blocked'], runs['blas'])} |")


def layer_errors(folder: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from minibert import SentenceEncoder
    from minibert.verify import sentences

    ours = SentenceEncoder.from_pretrained(folder, path="fast")
    texts = sentences(ours.tokenizer.max_length)
    references = {dtype: SentenceTransformer(folder, device="cpu", model_kwargs={"dtype": dtype,
                                                                                "attn_implementation": "eager"})
                  for dtype in (torch.float32, torch.float64)}
    names = kernels.candidates(torch.float32)
    attention_kernels.ATTENTION_CHOSEN[torch.float32] = "products"  # as transformers' eager attention computes it
    worst: dict[str, list[float]] = {}
    for start in range(0, len(texts), 8):
        batch = ours.tokenizer(texts[start:start + 8])
        real = batch.attention_mask.bool()
        with torch.inference_mode():
            states = {dtype: model[0].auto_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                                 output_hidden_states=True).hidden_states
                      for dtype, model in references.items()}
            runs = {"transformers": states[torch.float32]}
            for name in names:
                kernels.CHOSEN[torch.float32] = name
                runs[name] = ours.bert(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                                       output_hidden_states=True).hidden_states
        for who, hidden in runs.items():
            exact = states[torch.float64]
            errors = [float((a[real].double() - b[real]).abs().max()) for a, b in zip(hidden, exact, strict=True)]
            worst[who] = [max(e, w) for e, w in zip(errors, worst.get(who, errors), strict=True)]
    print(f"\n{folder}: max |difference| from float64 transformers after every layer (real tokens)")
    print("| layer | " + " | ".join(f"{who} fp32" for who in worst) + " |")
    print("|---" * (1 + len(worst)) + "|")
    for layer in range(len(worst["transformers"])):
        print(f"| {'embeddings' if layer == 0 else layer} | " + " | ".join(f"{w[layer]:.1e}" for w in worst.values())
              + " |")


def speeds(rounds: int = 3) -> None:
    """What accuracy costs: the fast fp32 path's sentences/s on STS-B test with each kernel (and the reference
    path), alternating rounds, the median round."""
    import statistics
    import time

    from minibert import SentenceEncoder
    from minibert.data import default_data_dir, read_sts_tsv

    pairs = read_sts_tsv(default_data_dir() / "stsb" / "test.tsv")
    texts = [p.a for p in pairs] + [p.b for p in pairs]
    models = {"reference": SentenceEncoder.from_pretrained("all-MiniLM-L6-v2", path="reference"),
              "fast": SentenceEncoder.from_pretrained("all-MiniLM-L6-v2", path="fast")}
    runs = [("reference", "blas")] + [("fast", name) for name in kernels.candidates(torch.float32)]
    rates: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for _ in range(rounds):
        for path, name in runs:
            kernels.CHOSEN[torch.float32] = name
            start = time.perf_counter()
            models[path].encode(texts, batch_size=32)
            rates[(path, name)].append(len(texts) / (time.perf_counter() - start))
    print(f"\nall-MiniLM-L6-v2, STS-B test ({len(texts)} sentences, batch 32), sentences/s, median of {rounds} rounds")
    for (path, name), values in rates.items():
        print(f"| {path} path, {name} | {statistics.median(values):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="weights/all-mpnet-base-v2")
    args = parser.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; chosen for float32 here: {kernels.linear_kernel(torch.float32)}, "
          f"attention {attention_kernels.attention_kernel(torch.float32)}\n")
    product_errors()
    if "blocked" in kernels.candidates(torch.float32):
        sum_lengths()
    layer_errors(args.model)
    speeds()


if __name__ == "__main__":
    main()

"""Where encoding time goes: matmul, attention, softmax, GELU, LayerNorm, data movement, Python.

Encodes STS-B test (2,758 sentences, batch 32) under torch.profiler for each path and dtype, and
splits the wall time by the operators' own time. "Python and dispatch" is the wall time no operator
accounts for: the interpreter, module calls and the tokenizer. Then the rate of the products themselves
(the real tokens' linear-layer multiply-adds over the time in matmul), beside the best linear layer of
the model's shape measured at the end: where that rate is near the best, the rest of the gap is outside
the products.

    python scripts/profile_encode.py [--data ../shared/data] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv

from bench_encode import add_malloc_option, encoder_flops, malloc_setting, matmul_ceiling

CATEGORIES = {  # operator name -> where it belongs
    "matmul": ("aten::addmm", "aten::mm", "mkldnn::_linear_pointwise", "aten::_int_mm", "onednn::qlinear_pointwise"),
    "int8 quantize, dequantize": ("aten::amax", "aten::amin", "aten::round_", "aten::addcmul", "aten::addcmul_",
                                  "aten::mul_", "aten::sub_", "aten::bitwise_xor"),  # (dtype conversions: copies)
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm", "aten::baddbmm",
                  "aten::masked_fill_", "aten::where"),
    "softmax": ("aten::_softmax",),
    "GELU": ("aten::gelu",),
    "LayerNorm": ("aten::native_layer_norm",),
    "residual adds": ("aten::add", "aten::add_"),
    "copies, packing": ("aten::copy_", "aten::index_copy_", "aten::index_copy", "aten::index_select", "aten::fill_",
                        "aten::zero_", "aten::_index_put_impl_", "aten::cat"),
}


def split(encoder: SentenceEncoder, sentences: list[str], batch_size: int) -> dict[str, float]:
    """Seconds per category for one encode of `sentences` (after a warm-up)."""
    encoder.encode(sentences[:256], batch_size=batch_size)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        encoder.encode(sentences, batch_size=batch_size)
        wall = time.perf_counter() - start
    # the elementwise operators that quantize and dequantize are that only on the int8 path
    categories = {c: names for c, names in CATEGORIES.items() if encoder.bert.path == "int8" or "int8" not in c}
    seconds = dict.fromkeys([*CATEGORIES, "other operators"], 0.0)
    for event in prof.key_averages():
        category = next((c for c, names in categories.items() if event.key in names), "other operators")
        seconds[category] += event.self_cpu_time_total / 1e6
    seconds["Python and dispatch"] = max(wall - sum(seconds.values()), 0.0)
    seconds["wall"] = wall
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    add_malloc_option(parser)
    args = parser.parse_args()
    malloc = malloc_setting(args)
    torch.set_num_threads(args.threads)
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]

    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        encoder = SentenceEncoder.from_pretrained(args.model, dtype=dtype, path="reference")
        name = str(dtype).removeprefix("torch.")
        runs[f"reference {name}"] = split(encoder, sentences, args.batch_size)
        runs[f"fast {name}"] = split(encoder.to_path("fast"), sentences, args.batch_size)
        if dtype == torch.float32:
            runs["fast int8"] = split(encoder.to_path("int8"), sentences, args.batch_size)

    print(f"{len(sentences)} sentences, batch {args.batch_size}, {args.threads} threads, under torch.profiler; "
          f"malloc: {malloc}; share of the wall time")
    rows = [k for k in next(iter(runs.values())) if k != "wall"]
    print(f"{'':22}" + "".join(f"{name:>20}" for name in runs))
    for row in rows:
        print(f"{row:22}" + "".join(f"{r[row] / r['wall']:20.1%}" for r in runs.values()))
    # the issue's measure of the work between the products: everything but the linear layers' matmuls (the
    # attention products count as outside: on the fast path SDPA's kernel holds its softmax too)
    print(f"{'outside the products':22}" + "".join(f"{1 - r['matmul'] / r['wall']:20.1%}" for r in runs.values()))
    print(f"{'wall seconds':22}" + "".join(f"{r['wall']:20.2f}" for r in runs.values()))
    # The rate of the products themselves: the real tokens' linear-layer work over the time spent in matmul
    # (the reference path, and the fast path on a lightly padded grid, also multiply padding rows: that time
    # counts, not that work).
    linear, cfg = encoder_flops(encoder, sentences, attention=False), encoder.bert.config
    print(f"{'matmul GFLOP/s':22}" + "".join(f"{linear / r['matmul'] / 1e9:20.1f}" for r in runs.values()))
    print("best linear layer of the model's shape, measured now (GFLOP/s): "
          + ", ".join(f"{group} {matmul_ceiling('cpu', group, cfg.hidden_size, cfg.intermediate_size):.1f}"
                      for group in ("float32", "bfloat16", "int8")))


if __name__ == "__main__":
    main()

"""What fusing the work between the products buys on the CPU: the fast path's blocks (fp32, bf16) and the
int8 path's, each block's forward compiled by inductor (dynamic shapes, so every batch runs as it comes),
against the same model in eager PyTorch, alternating rounds in one process.

    python experiments/fused_blocks/measure.py [--rounds 5]     # a few minutes; needs a C++ compiler
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import attention_kernels, kernels

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from timing import alternating_rounds  # noqa: E402  (scripts/, put on the path above)


def load(dtype: torch.dtype, path: str, compiled: bool, warm_up: list[str] | None = None, frozen: bool = False
         ) -> tuple[SentenceEncoder, float]:
    """The default model on ``path``, its blocks' forwards compiled when ``compiled`` (with inductor's weight
    freezing when ``frozen``: the weights become constants of the compiled code, the form in which inductor
    takes oneDNN's int8 linear), and the seconds its first batch took (the compiling, when compiled). A compiled
    one then encodes ``warm_up``, so that every shape is compiled before the timing, under the same settings."""
    encoder = SentenceEncoder.from_pretrained(DEFAULT_MODEL, dtype=dtype).to_path(path)
    if compiled:
        import torch._dynamo
        import torch._inductor.config

        from minibert.paths.compiled import recompile_limits

        # a batch on its grid (keep or not) and a packed one trace differently: more than dynamo's default 8
        for setting, limit in recompile_limits().items():
            setattr(torch._dynamo.config, setting, limit)
        for block in encoder.bert.blocks:
            if frozen:  # compiled as a module, whose attributes (the packed int8 weights) freezing can fold in
                block.compile(dynamic=True)
            else:
                block.forward = torch.compile(block.forward, dynamic=True)
    with torch._inductor.config.patch(freezing=frozen) if compiled else contextlib.nullcontext():
        start = time.perf_counter()
        encoder.encode(["a first batch compiles the blocks", "for every shape that follows"], batch_size=32)
        seconds = time.perf_counter() - start
        if warm_up:  # a batch on its grid (with or without padding) and a packed one trace differently
            encoder.encode(warm_up, batch_size=32)
    return encoder, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    encoders = {}
    for name, dtype, path in (("fast float32", torch.float32, "fast"), ("fast bfloat16", torch.bfloat16, "fast"),
                              ("int8 (int_mm)", torch.float32, "int8")):
        # inductor takes oneDNN's int8 linear only with its weights frozen into the graph: the int8 rows
        # multiply by torch._int_mm, and the default kernel (oneDNN's, where exact) runs eager beside them
        kernels.CHOSEN[torch.int8] = "int_mm"
        encoders[name], _ = load(dtype, path, compiled=False)
        encoders[name + ", blocks compiled"], seconds = load(dtype, path, compiled=True, warm_up=sentences)
        print(f"{name}: compiling took {seconds:.1f} s")
    del kernels.CHOSEN[torch.int8]
    encoders["int8"], _ = load(torch.float32, "int8", compiled=False)
    encoders["int8, blocks compiled, frozen"], seconds = load(torch.float32, "int8", compiled=True,
                                                              warm_up=sentences, frozen=True)
    print(f"int8 ({kernels.CHOSEN[torch.int8]}), weights frozen: compiling took {seconds:.1f} s")
    reference = {name: e.encode(sentences[:512], convert_to="torch").float() for name, e in encoders.items()}
    times = alternating_rounds({name: lambda e=e: e.encode(sentences, batch_size=32) for name, e in encoders.items()},
                               args.rounds)
    print(f"\n{len(sentences)} sentences of STS-B test, batch 32, {torch.get_num_threads()} threads, median of "
          f"{args.rounds} alternating rounds; kernels: {kernels.CHOSEN}, "
          f"attention {attention_kernels.ATTENTION_CHOSEN}")
    rates = {name: len(sentences) / statistics.median(t) for name, t in times.items()}
    for name, rate in rates.items():
        base = {"int8": "int8 (int_mm)", "int8, blocks compiled, frozen": "int8"}.get(
            name, name.removesuffix(", blocks compiled"))
        diff = (reference[name] - reference[base]).abs().max().item()
        print(f"{name:34}{rate:9.1f} sent/s{rate / rates[base]:7.2f}x eager   max |difference| {diff:.1e}")
    compiled, frozen = rates["int8 (int_mm), blocks compiled"], rates["int8, blocks compiled, frozen"]
    print(f"int8 over fast bfloat16 eager: eager {rates['int8'] / rates['fast bfloat16']:.2f}x (int8 by "
          f"{kernels.CHOSEN[torch.int8]}), blocks compiled {compiled / rates['fast bfloat16']:.2f}x (int_mm), "
          f"{frozen / rates['fast bfloat16']:.2f}x ({kernels.CHOSEN[torch.int8]}, weights frozen)")


if __name__ == "__main__":
    main()

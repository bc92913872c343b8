"""The int8 path's speed by kernel, against the fast bf16 path, in one process: every exact int8 kernel here
forced in turn (the embeddings are the same numbers on each, which this checks), alternating rounds so that
machine noise hits all alike. With ``--before COMMIT``, that commit's int8 path too (its ``int8.py`` and
``int8_kernels.py``, imported from git beside today's), to measure a change to the path itself.

    python experiments/int8/kernels_ab.py [--rounds 7] [--before 1fdb6b2~1]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import convert, int8_kernels, kernels

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from timing import alternating_rounds  # noqa: E402  (scripts/, put on the path above)


def int8_at(commit: str, kernel: str) -> SentenceEncoder:
    """The default model on ``commit``'s int8 path, its products by ``kernel``."""
    folder = Path(tempfile.mkdtemp())
    for name in ("int8_kernels", "int8"):
        source = subprocess.run(["git", "show", f"{commit}:minibert/paths/{name}.py"], check=True,
                                capture_output=True, text=True).stdout
        source = source.replace("from minibert.paths.int8_kernels", "from before_int8_kernels")
        (folder / f"before_{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("before_int8", folder / "before_int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    encoder = SentenceEncoder.from_pretrained(DEFAULT_MODEL)
    kernels.CHOSEN[torch.int8] = kernel
    encoder.bert = module.quantize_int8(convert(encoder.bert, "fast"))
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", help="a commit whose int8 path to time beside today's")
    args = parser.parse_args()
    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    chosen = int8_kernels.int8_kernel()  # what this process measured, before forcing each
    exact = list(int8_kernels.exact_kernels())
    encoders = {}
    for kernel in exact:
        kernels.CHOSEN[torch.int8] = kernel
        encoders[f"int8, {kernel}"] = SentenceEncoder.from_pretrained(DEFAULT_MODEL).to_path("int8")
        if args.before:
            encoders[f"int8 at {args.before}, {kernel}"] = int8_at(args.before, kernel)
    encoders["fast bfloat16"] = SentenceEncoder.from_pretrained(DEFAULT_MODEL, dtype=torch.bfloat16).to_path("fast")
    kernels.CHOSEN[torch.int8] = chosen
    outputs = {name: e.encode(sentences[:512], convert_to="torch").float() for name, e in encoders.items()}
    first = outputs["int8, int_mm"]
    for name, output in outputs.items():
        if name.startswith("int8, "):
            assert torch.equal(output, first), f"{name}: not the embeddings of int_mm"
    times = alternating_rounds({name: lambda e=e: e.encode(sentences, batch_size=32) for name, e in encoders.items()},
                               args.rounds)
    print(f"{len(sentences)} sentences of STS-B test, batch 32, {torch.get_num_threads()} threads, median of "
          f"{args.rounds} alternating rounds; the int8 kernel this process chose: {chosen}")
    bf16 = len(sentences) / statistics.median(times["fast bfloat16"])
    for name, t in times.items():
        rate = len(sentences) / statistics.median(t)
        print(f"{name:36}{rate:9.1f} sent/s {rate / bf16:6.2f}x fast bf16   rounds: "
              + " ".join(f"{len(sentences) / s:.0f}" for s in t))


if __name__ == "__main__":
    main()

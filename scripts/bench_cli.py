"""Whole-process speed of the command line: `minibert encode` against sentence-transformers, start-up
included (imports, loading the model, tokenizing, encoding, writing the .npy), as a user meets it.

Each row is a fresh process that embeds STS-B test (2,758 sentences, one a line) into a .npy; rows
alternate round by round, so that machine noise hits all alike. Prints the median and best wall time
and sentences/s of each row, and its ratio to sentence-transformers.

    python scripts/bench_cli.py [--rounds 5] [--model all-MiniLM-L6-v2] [--path fast --path reference]
                                [--checkout OTHER_CHECKOUT]   # also time another checkout's default

`--checkout DIR` adds a row for the `minibert encode` of another checkout (for example the commit before
a change), run with the same interpreter and DIR's code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minibert import DEFAULT_MODEL, resolve_model
from minibert.data import default_data_dir, read_sts_tsv

ST_SCRIPT = """
import sys, numpy as np
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
lines = open(sys.argv[2], encoding="utf-8").read().split("\\n")[:-1]
np.save(sys.argv[3], model.encode(lines, batch_size=32))
"""


CHECKOUT_SCRIPT = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
sys.path.insert(0, sys.argv.pop(1))
sys.argv[0] = "minibert"
runpy.run_module("minibert", run_name="__main__")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir(), help="folder with stsb/test.tsv (or $MINIBERT_DATA)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--path", action="append", default=[], help="also time `--path PATH` (repeatable)")
    parser.add_argument("--checkout", help="another checkout whose default `minibert encode` is timed too")
    args = parser.parse_args()

    pairs = read_sts_tsv(Path(args.data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    folder = str(resolve_model(args.model))
    tmp = Path(tempfile.mkdtemp())
    (tmp / "in.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    encode = [sys.executable, "-m", "minibert", "encode", "--model", folder, "--input", str(tmp / "in.txt")]
    # name -> the command, and how it takes the output file
    rows = {"sentence-transformers": ([sys.executable, "-c", ST_SCRIPT, folder, str(tmp / "in.txt")], []),
            "minibert encode (default path)": (encode, ["--output"])}
    for path in args.path:
        rows[f"minibert encode --path {path}"] = ([*encode, "--path", path], ["--output"])
    if args.checkout:  # an editable install's import hook would win over PYTHONPATH: drop it first
        other = [sys.executable, "-c", CHECKOUT_SCRIPT, args.checkout, *encode[3:]]
        rows[f"minibert encode at {args.checkout}"] = (other, ["--output"])

    times: dict[str, list[float]] = {name: [] for name in rows}
    outputs = {}
    for _ in range(args.rounds + 1):  # the first round warms the file cache and is not counted
        for name, (cmd, output_flag) in rows.items():
            out = tmp / f"{len(outputs)}.npy"
            start = time.perf_counter()
            result = subprocess.run([*cmd, *output_flag, str(out)], env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if result.returncode != 0:
                sys.exit(f"{name} failed:\n{result.stderr}")
            times[name].append(seconds)
            outputs[name] = np.load(out)
    print(f"{len(sentences)} sentences from STS-B test, model {folder}, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, whole process each")
    st = statistics.median(times["sentence-transformers"][1:])
    print(f"{'row':44}{'median s':>10}{'best s':>9}{'sent/s':>9}{'vs ST':>8}{'max |diff| vs ST':>18}")
    for name, ts in times.items():
        median = statistics.median(ts[1:])
        diff = np.abs(outputs[name].astype(np.float64) - outputs["sentence-transformers"]).max()
        print(f"{name:44}{median:10.2f}{min(ts[1:]):9.2f}{len(sentences) / median:9.0f}{st / median:7.2f}x{diff:18.1e}")


if __name__ == "__main__":
    main()

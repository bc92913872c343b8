"""Encode speed with glibc's malloc as it comes and with freed memory kept (minibert.paths.keep_freed_memory).

The setting belongs to the whole process, so each side runs in processes of its own, alternating: a child
process per (setting, repeat) encodes STS-B test a few times on each path and reports the median rate
and the page faults of one encode.

    python experiments/malloc/measure.py [--repeats 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from minibert import DEFAULT_MODEL, SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.paths import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from timing import alternating_rounds  # noqa: E402  (scripts/, put on the path above)

PATHS = (("reference", torch.float32), ("fast", torch.float32), ("int8", torch.float32), ("fast", torch.bfloat16))


def child(setting: str, rounds: int, data: str) -> dict[str, tuple[float, int]]:
    """Per path: (median sentences/s, page faults of the median encode), in this process."""
    if setting == "kept" and not keep_freed_memory():
        raise SystemExit("this C library is not glibc: nothing to compare")
    torch.set_num_threads(2)
    pairs = read_sts_tsv(Path(data) / "stsb" / "test.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    encoders = {}
    for path, dtype in PATHS:
        start = SentenceEncoder.from_pretrained(DEFAULT_MODEL, dtype=dtype, path="reference")
        encoders[f"{path} {str(dtype).removeprefix('torch.')}"] = start.to_path(path)
    for encoder in encoders.values():
        encoder.encode(sentences[:256], batch_size=32)  # warm-up: kernel choice, first allocations
    faults: dict[str, list[int]] = {name: [] for name in encoders}

    def encode(name: str) -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        encoders[name].encode(sentences, batch_size=32)
        faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    times = alternating_rounds({name: lambda name=name: encode(name) for name in encoders}, rounds)
    runs = {name: sorted(zip((len(sentences) / t for t in times[name]), faults[name], strict=True))
            for name in encoders}
    return {name: r[len(r) // 2] for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="processes per setting, alternating")
    parser.add_argument("--rounds", type=int, default=3, help="encodes per path in each process")
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--child", choices=("defaults", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rounds, args.data)))
        return
    results: dict[str, list[dict]] = {"defaults": [], "kept": []}
    for _ in range(args.repeats):
        for setting in results:
            command = [sys.executable, __file__, "--child", setting, "--rounds", str(args.rounds), "--data", args.data]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"STS-B test, batch 32, 2 threads; {args.repeats} processes per setting, alternating, median of "
          f"{args.rounds} encodes in each: sentences/s (page faults in one encode, thousands)")
    print(f"{'path':18}{'malloc defaults':>44}{'freed memory kept':>44}{'kept / defaults':>18}")
    for name in results["defaults"][0]:
        cells = []
        for setting in results:
            runs = [r[name] for r in results[setting]]
            cells.append(", ".join(f"{rate:.0f} ({faults / 1000:.0f}k)" for rate, faults in runs))
        ratio = statistics.median(r[name][0] for r in results["kept"]) \
            / statistics.median(r[name][0] for r in results["defaults"])
        print(f"{name:18}{cells[0]:>44}{cells[1]:>44}{ratio:>17.2f}x")


if __name__ == "__main__":
    main()

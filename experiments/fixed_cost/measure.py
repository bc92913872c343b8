"""What one forward costs besides its arithmetic, on the CPU paths: a model of MiniLM's depth (6 layers) but
32 wide, so that its products take next to no time, run on one 2-token sentence and on a batch of 32 x 24
(half of it padding). What is left is the per-operator cost of PyTorch's dispatch and kernels and the
Python that issues them, which every batch pays. ``--against COMMIT`` times another commit the same way
(a git worktree of it), the two taking turns in processes of their own.

    python experiments/fixed_cost/measure.py [--against COMMIT] [--rounds 5]    # about 1 minute on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from timing import in_turn  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from minibert.config import BertConfig
from minibert.model import BertModel
from minibert.paths import cast, convert
torch.set_num_threads(2)
torch.manual_seed(0)
config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64)
reference = BertModel(config).eval()
models = {"fast fp32": convert(reference, "fast"), "fast bf16": convert(cast(reference, torch.bfloat16), "fast"),
          "int8": convert(reference, "int8")}
out = {}
for rows, length in ((1, 2), (32, 24)):
    ids = torch.randint(5, 1000, (rows, length))
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[rows // 2:, length // 2:] = 0
    for name, model in models.items():
        with torch.no_grad():
            for _ in range(30):
                model(ids, mask)
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(100):
                    model(ids, mask)
                best = min(best, (time.perf_counter() - start) / 100)
        out[f"{name}, {rows} x {length}"] = best * 1e6
print(json.dumps(out))
"""


def run(source: Path) -> dict[str, float]:
    """Microseconds per forward, best of 5 x 100 calls, in a process importing minibert from ``source``."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(source)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="a commit to time beside this checkout")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sources = {"this checkout": ROOT}
        if args.against:
            worktree = Path(scratch) / "against"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.against],
                           check=True)
            sources[f"at {args.against}"] = worktree
        try:
            results: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
            for turn in range(args.rounds):
                for name, source in in_turn(sources.items(), turn):
                    results[name].append(run(source))
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=True)
    rows = list(next(iter(results.values()))[0])
    print(f"microseconds per forward, median over {args.rounds} processes of the best of 5 x 100 calls")
    print(f"{'':28s}" + "".join(f"{name:>22s}" for name in sources))
    for row in rows:
        medians = [statistics.median(r[row] for r in results[name]) for name in sources]
        ratio = f"   ({medians[1] / medians[0]:.2f}x)" if len(medians) == 2 else ""
        print(f"{row:28s}" + "".join(f"{m:22.0f}" for m in medians) + ratio)


if __name__ == "__main__":
    main()

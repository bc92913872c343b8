"""How far from float32 is a half-precision draw of tests/differential.py, for sentence-transformers' own half run
and for minibert's reference and fast paths? And where does each land against the harness's tolerance?

For every draw among ``--draws`` seeds from ``--first`` whose model runs in bf16 or fp16, the largest and the
mean |embedding - sentence-transformers' float32 embedding| over the draw's sentences, of sentence-transformers'
half run (``st``), minibert's reference path and its fast path; the tolerance the harness held the draw to
before (four units in the last place at the largest value, or twice ``st``'s largest error on the draw's
values) and the one it holds it to now (``st``'s largest error over all fourteen sentences counts too). Rows go
to ``--output`` (JSON lines); the summary is printed.

    python experiments/half_tolerance/errors.py --first 61000000 --draws 4000 --output half.jsonl

The fast path's kernels are chosen per process, so other choices are other runs: ``MINIBERT_CPU_LINEAR=blas``
(``F.linear``'s bf16 products, the residual added after them), ``MINIBERT_CPU_ATTENTION=sdpa``; and
``--residual-after`` keeps oneDNN's products but adds the blocks' residuals after them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from minibert import SentenceEncoder  # noqa: E402
from minibert.paths import onednn  # noqa: E402

import differential  # noqa: E402
from folders import SENTENCES, build, draw  # noqa: E402


def errors(seed: int, root: Path) -> dict | None:
    """One draw's row, or None where it is not a half-precision draw both libraries run."""
    c = draw(seed)
    if c["dtype"] not in ("bfloat16", "float16") and not c["config_args_dtype"]:
        return None  # (a float32 draw: only these two settings make a half model)
    folder = root / f"draw-{seed}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = build(c, folder)  # (the folder itself, or the subfolder sentence-transformers reads)
            texts = [SENTENCES[i] for i in c["sentences"]]
            st, fp32, _, options, dtype, own_error = differential.reference_run(c, built, texts)
            if dtype == torch.float32:
                return None
            ours = SentenceEncoder.from_pretrained(built, path="reference")
            encode = getattr(ours, c["encode_call"])
            runs = {"st": st, "reference": encode(texts, **options), "fast": encode(texts, path="fast", **options)}
    except Exception:  # a draw one of the libraries refuses: the harness sorts those, not this study
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    gaps = {name: np.abs(v.astype(np.float32) - fp32.astype(np.float32)) for name, v in runs.items()}
    if not all(np.isfinite(g).all() for g in gaps.values()) or gaps["st"].max() == 0:
        return None  # NaN embeddings (both libraries), or a half run equal to float32: no ratio to take
    return {"seed": seed, "family": c["family"], "dtype": str(dtype).removeprefix("torch."),
            **{f"max_{k}": float(g.max()) for k, g in gaps.items()},
            **{f"mean_{k}": float(g.mean()) for k, g in gaps.items()},
            "tolerance_before": differential.tolerance(st, fp32, dtype),
            "tolerance": differential.tolerance(st, fp32, dtype, own_error)}


def summary(rows: list[dict]) -> str:
    lines = [f"{len(rows)} half-precision draws"]
    for path in ("reference", "fast"):
        largest = np.array([r[f"max_{path}"] / r["max_st"] for r in rows])
        mean = np.array([r[f"mean_{path}"] / r["mean_st"] for r in rows])
        lines.append(
            f"{path:>9}: largest error / st's: median {np.median(largest):.2f}, 99th percentile "
            f"{np.quantile(largest, 0.99):.2f}, max {largest.max():.2f}; equal to st's on {np.mean(largest == 1):.0%}"
            f" | mean error / st's: geometric mean {np.exp(np.log(mean).mean()):.4f}, max {mean.max():.2f}"
            f" | over the tolerance before {sum(r[f'max_{path}'] > r['tolerance_before'] for r in rows)}, "
            f"now {sum(r[f'max_{path}'] > r['tolerance'] for r in rows)}; largest share of it now "
            f"{max(r[f'max_{path}'] / r['tolerance'] for r in rows):.2f}")
    return "\n".join(lines)


def main() -> None:
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--first", type=int, default=61000000)
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--output", default="half.jsonl")
    parser.add_argument("--residual-after", action="store_true",
                        help="oneDNN's products without the residual inside them")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the harness runs
    if args.residual_after:
        onednn.ADD_FAILED.update((torch.bfloat16, torch.float16))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first, args.first + args.draws):
            row = errors(seed, Path(tmp))
            if row is not None:
                rows.append(row)
    Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(summary(rows))


if __name__ == "__main__":
    main()

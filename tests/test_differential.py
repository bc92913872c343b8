"""Differential test against sentence-transformers over random folders (``tests/differential.py``).

The suite runs a fixed set of draws (the same every run, so a red run can be replayed with
``python tests/differential.py --first SEED --draws 1``). ``MINIBERT_DIFFERENTIAL_DRAWS=2000`` runs that many
instead, from ``MINIBERT_DIFFERENTIAL_FIRST`` (default 0); the counts and every failure are printed and, with
``MINIBERT_DIFFERENTIAL_REPORT=FILE``, written there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from minibert.paths.fast import FastEncoderBlock

from differential import assert_matches, campaign, compare, folder_of, report

pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
pytest.importorskip("transformers", reason="transformers builds the folders")

DRAWS = int(os.environ.get("MINIBERT_DIFFERENTIAL_DRAWS", "100"))
FIRST = int(os.environ.get("MINIBERT_DIFFERENTIAL_FIRST", "0"))


def test_random_folders_give_the_reference_embeddings_or_a_named_refusal(tmp_path):
    outcomes = campaign(range(FIRST, FIRST + DRAWS), tmp_path, progress=DRAWS > 200)
    text = report(outcomes)
    print(text)
    if os.environ.get("MINIBERT_DIFFERENTIAL_REPORT"):
        Path(os.environ["MINIBERT_DIFFERENTIAL_REPORT"]).write_text(text + "\n", encoding="utf-8")
    kinds = [o.kind for o in outcomes]
    assert "differ" not in kinds and "crash" not in kinds, text
    assert kinds.count("match") > DRAWS / 2, text  # the draws mostly build folders both libraries run


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_path_that_loses_bits_differs(tmp_path, monkeypatch, dtype):
    """The half-precision tolerance (four units in the last place, or twice sentence-transformers' own error over
    more sentences) still fails a path three bits less precise than its dtype: the fast path's post-LN sums
    truncated, as a lossy kernel would leave them."""
    c, folder = folder_of(tmp_path, "bert", dtype=str(dtype).removeprefix("torch."))
    assert_matches(c, folder)
    exact = FastEncoderBlock.residual_sum
    stored = {torch.bfloat16: 7, torch.float16: 10}[dtype]  # the mantissa bits the dtype keeps

    def lossy(layer, h, x, dropout):
        y = exact(layer, h, x, dropout)
        cut = ~((1 << (23 - stored + 3)) - 1)  # float32's low bits: the dtype's last three among them
        return (y.float().view(torch.int32) & cut).view(torch.float32).to(y.dtype)

    monkeypatch.setattr(FastEncoderBlock, "residual_sum", staticmethod(lossy))
    outcome = compare(c, folder)
    assert outcome.kind == "differ" and outcome.detail.startswith("fast:"), outcome.detail

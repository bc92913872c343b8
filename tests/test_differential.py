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

from differential import campaign, report

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

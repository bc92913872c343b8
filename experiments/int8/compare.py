"""How to run the encoder's linear layers in int8, chosen on dev sets only.

Every scheme quantizes weights to int8 with one scale per output row. They differ in the inputs:

- **per batch** (PyTorch's dynamic quantization, fbgemm: what the int8 path ran before): one scale for
  the whole (T, C) input of a layer, 7-bit as PyTorch runs it; all layers, or all but ``ffn_out``;
- **per token** (``minibert.paths.int8``): a scale per row (and an offset for ``ffn_out``'s input), with or
  without SmoothQuant's smoothing of the LayerNorm-fed layers (alpha 0.5 or 0.8, channel ranges from
  random token ids or from STS-B train text), and with ``ffn_out`` kept float;
- **ONNX Runtime dynamic int8**, what sentence-transformers' ``export_dynamic_quantized_onnx_model``
  makes (per-batch uint8 inputs, per-channel weights), when onnxruntime and optimum are installed.

Scored on STS-B dev with all-MiniLM-L6-v2 (Spearman of the cosines, and each embedding's cosine to the
float32 one), and, with a trained multi-task model (``--multitask``), on the dev sets of its other tasks:
SNLI, SST-2 and AG News (accuracy) and CoNLL-2003 (entity F1, from token states, not the pooled vector),
with how many predictions differ from the float32 model's. The chosen scheme's difference to ONNX
Runtime's on each dev set comes with a paired bootstrap interval: a difference of a few examples is not
a difference between the schemes.

    python experiments/int8/compare.py --multitask runs/multitask-1k/best     # in .venv-bench for the ORT row
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minibert import SentenceEncoder
from minibert.data import default_data_dir, read_sts_tsv
from minibert.model import BertOutput
from minibert.multitask import MultiTaskModel
from minibert.paths import convert
from minibert.paths.int8 import SMOOTHED, quantize_int8
from minibert.train.batches import hold_out
from minibert.train.evaluate import example_length, without_labels

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


from bench_encode import cosine_rows, sts_spearman  # noqa: E402  (scripts/, put on the path above)


def per_batch_int8(bert: nn.Module, keep_float: tuple[str, ...]) -> nn.Module:
    """The earlier scheme: PyTorch's dynamic int8 linear (fbgemm), one input scale per batch."""
    bert = copy.deepcopy(bert)
    for name, parent in list(bert.named_modules()):
        for child_name, child in parent.named_children():
            if not isinstance(child, nn.Linear) or f"{name}.{child_name}".endswith(keep_float or ("\0",)):
                continue
            plain = nn.Linear(child.in_features, child.out_features)
            plain.load_state_dict(child.state_dict())
            plain.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantized = torch.ao.nn.quantized.dynamic.Linear.from_float(plain)
            gelu = getattr(child, "gelu", None)
            setattr(parent, child_name, quantized if gelu is None else nn.Sequential(quantized, nn.GELU(gelu)))
    return bert


class OnnxRuntimeBert(nn.Module):
    """An encoder run by ONNX Runtime from a dynamic-int8 export, in place of a minibert model."""

    path = "onnxruntime"

    def __init__(self, bert: nn.Module, folder: Path) -> None:
        super().__init__()
        import onnxruntime
        from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig

        from minibert.weights import save_pretrained

        from rivals import cpu_int8_config

        self.config, self.pooler, self.anchor = bert.config, None, nn.Parameter(torch.zeros(1))
        export = folder / "onnx-int8"
        if not (export / "model_quantized.onnx").is_file():
            shutil.rmtree(folder / "hf", ignore_errors=True)
            save_pretrained(bert, folder / "hf")
            onnx = ORTModelForFeatureExtraction.from_pretrained(str(folder / "hf"), export=True)
            config = getattr(AutoQuantizationConfig, cpu_int8_config())(is_static=False)
            ORTQuantizer.from_pretrained(onnx).quantize(save_dir=str(export), quantization_config=config)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(export / "model_quantized.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False, pool=True):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "token_type_ids": torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids}
        out = self.session.run(None, {k: v.numpy() for k, v in feeds.items() if k in self.inputs})[0]
        return BertOutput(torch.from_numpy(out), None)


def text_ids(tokenizer, data: Path) -> torch.Tensor:
    """The first STS-B train sentences' token ids, run together and cut into rows of 24 (no padding)."""
    pairs = read_sts_tsv(data / "stsb" / "train.tsv")[:200]
    ids = [i for p in pairs for e in tokenizer.encode([p.a, p.b], warn_truncation=False) for i in e.ids]
    return torch.tensor(ids[: len(ids) // 24 * 24]).view(-1, 24)


EVERY_LAYER = (*SMOOTHED, ".attention_out", ".ffn_out")
CHOSEN, RIVAL = "**per token, smoothed a=0.5 (now)**", "ONNX Runtime dynamic int8"


def schemes(bert: nn.Module, scratch: Path, calibration: torch.Tensor) -> dict[str, nn.Module]:
    fast = convert(bert, "fast")
    found = {"float32 (fast path)": fast,
             "per batch, ffn_out float (before)": per_batch_int8(fast, ("ffn_out",)),
             "per batch, all": per_batch_int8(fast, ()),
             "per token, not smoothed": quantize_int8(copy.deepcopy(fast), smoothing=0),
             "per token, smoothed a=0.8": quantize_int8(copy.deepcopy(fast), smoothing=0.8),
             "per token, smoothed, ffn_out float": quantize_int8(copy.deepcopy(fast), ("ffn_out",)),
             CHOSEN: quantize_int8(copy.deepcopy(fast)),
             "same, ranges from STS-B train text": quantize_int8(copy.deepcopy(fast), calibration=calibration),
             "same, every layer smoothed": quantize_int8(copy.deepcopy(fast), smoothed=EVERY_LAYER),
             "same, ffn_out smoothed too": quantize_int8(copy.deepcopy(fast), smoothed=(*SMOOTHED, ".ffn_out"))}
    try:
        found["ONNX Runtime dynamic int8"] = OnnxRuntimeBert(bert, scratch)
    except ImportError as e:
        print(f"ONNX Runtime row skipped: {e.name} is not installed (pip install -e '.[bench]')")
    return found


def sts_dev(data: Path, scratch: Path) -> dict[str, tuple]:
    pairs = read_sts_tsv(data / "stsb" / "dev.tsv")
    sentences = [p.a for p in pairs] + [p.b for p in pairs]
    gold = np.array([p.label for p in pairs])
    encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2", path="reference")
    reference = encoder.encode(sentences)
    rows, embeddings = {}, {}
    for name, bert in schemes(encoder.bert, scratch / "minilm", text_ids(encoder.tokenizer, data)).items():
        model = SentenceEncoder(bert, encoder.tokenizer, encoder.pooling, encoder.normalize).eval()
        start = time.perf_counter()
        emb = model.encode(sentences)
        rate = len(sentences) / (time.perf_counter() - start)
        rho = sts_spearman(emb, gold)
        cos = cosine_rows(emb, reference)
        rows[name] = (rho, cos.min(), cos.mean(), rate)
        embeddings[name] = emb
    if RIVAL in rows:
        def metric(emb: list, ex: list) -> float:
            return sts_spearman(np.array([e[0] for e in emb] + [e[1] for e in emb]), np.array(ex))
        n = len(pairs)
        pair_rows = {name: list(zip(e[:n], e[n:], strict=True)) for name, e in embeddings.items()}
        diff, low, high = paired_interval(metric, list(gold), pair_rows[CHOSEN], pair_rows[RIVAL])
        print(f"STS-B dev, {CHOSEN} minus {RIVAL}: {diff:+.4f} [{low:+.4f}, {high:+.4f}] (95% paired bootstrap)")
    return rows


@torch.inference_mode()
def predictions(model: MultiTaskModel, task: str, examples: list) -> list[dict]:
    """Each example's prediction, in order, from batches of 64 (the examples come longest first)."""
    out = []
    for start in range(0, len(examples), 64):
        chunk = [without_labels(e) for e in examples[start:start + 64]]
        batch = model.collate(task, chunk)
        out += model.task(task).predict(model(task, batch).logits, batch, chunk)
    return out


def multitask_dev(folder: Path, data: Path, scratch: Path) -> dict[str, tuple]:
    """SNLI dev and AG News dev (the 10% of their training files that the run held out: 984 pairs, 1,000
    texts), SST-2 dev (6,735), CoNLL dev (3,250): each scheme's score and predicted labels (tags for NER)."""
    model = MultiTaskModel.load(folder, path="reference")
    run = json.loads((folder.parent / "config.json").read_text())  # what the run held out, and how
    fraction = {task["name"]: task["dev_split"] for task in run["tasks"]}
    seed = run["split_seed"]
    _, nli_dev = hold_out(model.task("nli").read(data / "snli" / "dev.tsv"), fraction["nli"], seed)
    _, topic_dev = hold_out(model.task("topic").read(data / "agnews" / "train.tsv"), fraction["topic"], seed)
    sets = {"nli": nli_dev, "sentiment": model.task("sentiment").read(data / "sst2" / "dev.tsv"), "topic": topic_dev,
            "ner": model.task("ner").read(data / "conll2003" / "valid.txt")}
    sets = {task: sorted(examples, key=example_length, reverse=True) for task, examples in sets.items()}
    rows, predicted = {}, {}
    bert = model.encoder.bert
    export = scratch / "multitask" / hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]  # per model
    for name, twin in schemes(bert, export, text_ids(model.encoder.tokenizer, data)).items():
        model.encoder.bert = twin
        rows[name] = []
        for task, examples in sets.items():
            predicted[name, task] = predictions(model, task, examples)
            score = model.task(task).metrics(predicted[name, task], examples)[model.task(task).main_metric]
            rows[name].append((score, [p.get("label", p.get("tags")) for p in predicted[name, task]]))
    model.encoder.bert = bert
    if RIVAL in rows:  # is the difference to ONNX Runtime more than the dev sets' sampling noise?
        print(f"{CHOSEN} minus {RIVAL}, with a 95% paired bootstrap interval over the dev examples:")
        for task, examples in sets.items():
            def metric(chosen: list, ex: list, task=task) -> float:
                return model.task(task).metrics(chosen, ex)[model.task(task).main_metric]
            diff, low, high = paired_interval(metric, examples, predicted[CHOSEN, task], predicted[RIVAL, task])
            print(f"  {task:10} {diff:+.4f}  [{low:+.4f}, {high:+.4f}]")
    return rows


def paired_interval(metric, examples: list, a: list, b: list, draws: int = 1000) -> tuple[float, float, float]:
    """metric(a) - metric(b), and the 2.5th and 97.5th percentiles of that difference over ``draws``
    resamples of the examples (with replacement, the same resample for both)."""
    rng, n = np.random.default_rng(0), len(examples)
    diffs = []
    for _ in range(draws):
        pick = rng.integers(0, n, n)
        sample = [examples[i] for i in pick]
        diffs.append(metric([a[i] for i in pick], sample) - metric([b[i] for i in pick], sample))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return metric(a, examples) - metric(b, examples), low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir())
    parser.add_argument("--multitask", help="a multi-task model with the tasks of scripts/configs/multitask.toml "
                        "(nli, sentiment, topic, ner), saved by scripts/train.py (its config.json beside it)")
    args = parser.parse_args()
    data, scratch = Path(args.data), ROOT / "runs" / "int8-study"
    sts = sts_dev(data, scratch)
    other = multitask_dev(Path(args.multitask), data, scratch) if args.multitask else {}
    print("task dev sets: score (predictions that differ from float32's)")
    print(f"{'scheme':38}{'STS-B dev':>10}{'cos min':>9}{'cos mean':>10}{'SNLI dev':>16}{'SST-2 dev':>16}"
          f"{'AG News dev':>16}{'CoNLL dev':>16}{'sent/s':>8}")
    float32 = next(iter(other.values()), ())
    for name, (rho, cos_min, cos_mean, rate) in sts.items():
        tasks = "".join(f"{score:9.4f} ({sum(a != b for a, b in zip(p, ref, strict=True)):3d})"
                        for (score, p), (_, ref) in zip(other.get(name, ()), float32, strict=True))
        print(f"{name:38}{rho:10.4f}{cos_min:9.4f}{cos_mean:10.4f}{tasks}{rate:8.0f}")


if __name__ == "__main__":
    main()

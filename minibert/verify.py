"""``minibert verify MODEL_DIR``: the weight-parity check as a command.

minibert loads the folder and runs a built-in set of sentences (lengths from one token to beyond the
limit, special tokens written in the text, accents, CJK, emoji); transformers and sentence-transformers
load the same folder and run the same sentences. Printed: the largest difference of the hidden states
after every layer (real tokens only) and of the sentence embeddings, for each minibert path. The exit
code is 0 when every difference is within its tolerance, 1 when one is not, 2 when the references are
not installed.

This is the one module that uses the reference libraries, imported here on request and only to compare
with: minibert computes nothing through them, and they are not among its dependencies.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from pathlib import Path

import torch

from minibert.tokenizer import TruncationWarning

FP32_TOLERANCE = 1e-5  # times max(1, the largest |value| of the reference): float32 rounding, layer after layer
# bf16 keeps 8 significant bits: its unit in the last place at value v is 2^(floor(log2 v) - 7). A bf16 run
# is compared with the float32 reference. It may differ by four such units at the largest value, or, in a
# deep model where rounding errors add up layer after layer, by twice as much as the references' own bf16
# run (transformers, sentence-transformers) differs from their float32 run: as accurate as theirs.
BF16_HIDDEN_ULPS, BF16_EMBEDDING_ULPS, BF16_REFERENCE_FACTOR = 4, 4, 2.0


def sentences(max_length: int) -> list[str]:
    """The built-in inputs: short to past the limit, special tokens written in the text, accents, CJK, emoji."""
    words = [" ".join(["word"] * n) for n in (1, 2, 8, 32, max(1, max_length - 2), max_length, max_length + 50)]
    return ["a", "", *words, "[CLS] [SEP] [MASK] [PAD] [UNK] <s> </s> <pad> <mask> in the text",
            "Caf\u00e9 na\u00efve r\u00e9sum\u00e9, \u00c6r\u00f8sk\u00f8bing, Stra\u00dfe, \u00e9\u0301",
            "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u4e2d\u6587\uff0c\ud55c\uad6d\uc5b4",
            "I love it \U0001f600\U0001f389\U0001f44d\U0001f3fd and \u2764\ufe0f", "A man is playing a guitar."]


def bf16_tolerance(reference: torch.Tensor, ulps: int) -> float:
    largest = float(reference.abs().max())
    return ulps * 2.0 ** (math.floor(math.log2(largest)) - 7) if largest > 0 else 0.0


def fp32_tolerance(reference: torch.Tensor) -> float:
    return FP32_TOLERANCE * max(1.0, float(reference.abs().max()))


def tolerances(theirs: torch.Tensor, theirs_bf16: torch.Tensor, bf16_ulps: int) -> tuple[float, float]:
    """(float32, bfloat16) tolerances for differences with ``theirs``: bf16's is ``bf16_ulps`` units in the
    last place at the largest value, or twice the references' own bf16 error, whichever is larger."""
    bf16_error = float((theirs_bf16.float() - theirs).abs().max())
    return fp32_tolerance(theirs), max(bf16_tolerance(theirs, bf16_ulps), BF16_REFERENCE_FACTOR * bf16_error)


def missing_references() -> list[str]:
    missing = []
    for name in ("transformers", "sentence_transformers"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name.replace("_", "-"))
    return missing


def run_paths(folder: Path):
    """name -> the minibert encoder of each path that is checked: reference and fast in float32, fast in bf16."""
    from minibert.sentence import SentenceEncoder

    fp32 = SentenceEncoder.from_pretrained(folder, path="reference", dtype=torch.float32)
    return {"reference fp32": fp32, "fast fp32": fp32.to_path("fast"),
            "fast bf16": SentenceEncoder.from_pretrained(folder, path="fast", dtype=torch.bfloat16)}


def verify(folder: str | Path, batch_size: int = 8) -> int:
    """Print the comparison; return the exit code."""
    with warnings.catch_warnings():  # the inputs beyond the limit are cut on purpose, on both sides
        warnings.simplefilter("ignore", TruncationWarning)
        return compare(folder, batch_size)


def compare(folder: str | Path, batch_size: int) -> int:
    missing = missing_references()
    if missing:
        print(f"minibert verify compares with the reference libraries; install them: pip install {' '.join(missing)}"
              " (or pip install -e '.[test]')")
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = importlib.import_module("transformers")
    sentence_transformers = importlib.import_module("sentence_transformers")
    from minibert.hub import resolve_model
    from minibert.pipeline import read_pipeline

    folder = resolve_model(folder)
    encoders = run_paths(folder)
    ours = encoders["reference fp32"]
    texts = sentences(ours.tokenizer.max_length)
    transformer = read_pipeline(folder).transformer
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(transformer))
    reference, reference_bf16 = (transformers.AutoModel.from_pretrained(
        str(transformer), attn_implementation="eager", dtype=dtype).eval() for dtype in (torch.float32, torch.bfloat16))
    config = ours.bert.config
    print(f"minibert verify {folder}: {config.model_type}, {config.num_hidden_layers} layers, {config.hidden_size} "
          f"dims, at most {ours.tokenizer.max_length} tokens; {len(texts)} sentences")

    failures = 0
    lower = ours.tokenizer.lowercase_input  # sentence_bert_config's do_lower_case, applied before the tokenizer
    ids_ok = all(ours.tokenizer.encode([t], warn_truncation=False)[0].ids == tokenizer(
        t.lower() if lower else t, truncation=True, max_length=ours.tokenizer.max_length)["input_ids"] for t in texts)
    print(f"token ids equal to transformers' tokenizer: {'yes' if ids_ok else 'NO'}")
    failures += not ids_ok

    worst = {name: [] for name in encoders}  # per layer: (largest difference, largest tolerance, failed)
    for start in range(0, len(texts), batch_size):
        batch = ours.tokenizer(texts[start:start + batch_size])
        real = batch.attention_mask.bool()
        with torch.inference_mode():
            theirs, theirs_bf16 = (model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                         output_hidden_states=True).hidden_states
                                   for model in (reference, reference_bf16))
            # each batch and layer is held to its own tolerance: (fp32, bf16)
            held_to = [tolerances(b[real], c[real], BF16_HIDDEN_ULPS) for b, c in zip(theirs, theirs_bf16, strict=True)]
            for name, encoder in encoders.items():
                mine = encoder.bert(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                                    output_hidden_states=True).hidden_states
                for layer, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                    diff = float((a[real].float() - b[real]).abs().max())
                    tol = held_to[layer]["bf16" in name]
                    if len(worst[name]) <= layer:
                        worst[name].append((0.0, tol, False))
                    was = worst[name][layer]
                    worst[name][layer] = (max(was[0], diff), max(was[1], tol), was[2] or diff > tol)

    print("\nhidden states, max |difference| with transformers (real tokens; tolerance in brackets)")
    print(f"{'layer':12}" + "".join(f"{name:>28}" for name in encoders))
    for layer in range(config.num_hidden_layers + 1):
        cells = []
        for name in encoders:
            diff, tol, failed = worst[name][layer]
            failures += failed
            cells.append(f"{diff:.1e} [{tol:.0e}]{' FAIL' if failed else ''}")
        print(f"{'embeddings' if layer == 0 else f'after {layer}':12}" + "".join(f"{c:>28}" for c in cells))

    expected, expected_bf16 = (torch.as_tensor(sentence_transformers.SentenceTransformer(
        str(folder), device="cpu", model_kwargs={"dtype": dtype}).encode(texts, batch_size=batch_size)).float()
        for dtype in (torch.float32, torch.bfloat16))
    print("\nsentence embeddings, max |difference| with sentence-transformers (tolerance in brackets)")
    held_to = tolerances(expected, expected_bf16, BF16_EMBEDDING_ULPS)
    got = {name: torch.as_tensor(encoder.encode(texts, batch_size=batch_size)).float()
           for name, encoder in encoders.items()}
    for name in encoders:
        diff, tol = float((got[name] - expected).abs().max()), held_to["bf16" in name]
        failures += diff > tol
        print(f"  {name:16} {diff:.1e} [{tol:.0e}]{' FAIL' if diff > tol else ''}")
    cosine = torch.nn.functional.cosine_similarity(got["fast bf16"], expected).min()
    print(f"  (fast bf16: lowest cosine with the reference {float(cosine):.5f})")
    print(f"\n{'OK: every difference is within its tolerance' if not failures else f'{failures} check(s) FAILED'}")
    return 1 if failures else 0


"""``minibert verify MODEL_DIR``: the weight-parity check as a command.

minibert loads the folder and runs a built-in set of sentences (lengths from one token to beyond the
limit, special tokens written in the text, accents, CJK, emoji); sentence-transformers loads the same folder
(its Transformer module is transformers' model) and runs the same sentences. Checked, each against a
tolerance:

    token ids            equal to sentence-transformers' tokenizer's
    hidden states        after every layer (real tokens), per path: reference fp32, fast fp32, fast bf16
                         (and compiled fp32 with ``--paths``), against transformers' model
    sentence embeddings  per path, against sentence-transformers' encode; int8 by its cosine

The exit code is 0 when every check is within its tolerance, 1 when one is not (or the folder is refused),
2 when the references are not installed.

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
# int8 keeps the direction of each embedding, not its every value: the lowest and the mean cosine with the
# float32 reference. (PyTorch's own dynamic int8 of the reference model reaches 0.81 and 0.89 on all-MiniLM-L6-v2,
# 0.27 and 0.54 on all-mpnet-base-v2; the int8 path 0.99 and 0.998, 0.97 and 0.99.)
INT8_LOWEST_COSINE, INT8_MEAN_COSINE = 0.95, 0.99
# name -> (path, dtype); "compiled" only when asked for (torch.compile takes a while)
PATHS = {"reference": ("reference", torch.float32), "fast": ("fast", torch.float32),
         "bf16": ("fast", torch.bfloat16), "int8": ("int8", torch.float32), "compiled": ("compiled", torch.float32)}
DEFAULT_PATHS = ("reference", "fast", "bf16", "int8")
LABELS = {"reference": "reference fp32", "fast": "fast fp32", "bf16": "fast bf16", "int8": "int8",
          "compiled": "compiled fp32"}


def sentences(max_length: int) -> list[str]:
    """The built-in inputs: short to past the limit, special tokens written in the text, accents, CJK, emoji."""
    words = [" ".join(["word"] * n) for n in (1, 2, 8, 32, max(1, max_length - 2), max_length, max_length + 50)]
    return ["a", "", *words, "[CLS] [SEP] [MASK] [PAD] [UNK] <s> </s> <pad> <mask> in the text",
            "Caf\u00e9 na\u00efve r\u00e9sum\u00e9, \u00c6r\u00f8sk\u00f8bing, Stra\u00dfe, \u00e9\u0301",
            "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u4e2d\u6587\uff0c\ud55c\uad6d\uc5b4",
            "I love it \U0001f600\U0001f389\U0001f44d\U0001f3fd and \u2764\ufe0f", "A man is playing a guitar.",
            "\u039f\u0394\u039f\u03a3 Hello WORLD"]


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


def check_arguments(batch_size: int, paths: tuple[str, ...]) -> None:
    """The command's arguments, before anything loads."""
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r}")
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise ValueError(f"--paths takes names from {', '.join(PATHS)}, got {','.join(paths) or 'none'}")


def run_paths(folder: Path, paths: tuple[str, ...] = DEFAULT_PATHS) -> dict:
    """name -> the minibert encoder of each path checked (each loaded in its dtype; the float32 ones share)."""
    from minibert.sentence import SentenceEncoder

    fp32 = SentenceEncoder.from_pretrained(folder, path="reference", dtype=torch.float32)
    out = {}
    for name in paths:
        path, dtype = PATHS[name]
        out[name] = fp32.to_path(path) if dtype == torch.float32 else \
            SentenceEncoder.from_pretrained(folder, path=path, dtype=dtype)
    return out


def verify(folder: str | Path, batch_size: int = 8, paths: tuple[str, ...] = DEFAULT_PATHS) -> int:
    """Print the comparison; return the exit code."""
    check_arguments(batch_size, tuple(paths))
    with warnings.catch_warnings():  # the inputs beyond the limit are cut on purpose, on both sides
        warnings.simplefilter("ignore", TruncationWarning)
        return compare(folder, batch_size, tuple(paths))


def compare(folder: str | Path, batch_size: int, paths: tuple[str, ...]) -> int:
    missing = missing_references()
    if missing:
        print(f"minibert verify compares with the reference libraries; install them: pip install {' '.join(missing)}"
              " (or pip install -e '.[test]')")
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sentence_transformers = importlib.import_module("sentence_transformers")
    from minibert.hub import resolve_model

    folder = resolve_model(folder)
    encoders = run_paths(folder, paths)  # first: a folder minibert refuses fails before the references load
    ours = next(iter(encoders.values()))
    texts = sentences(ours.tokenizer.max_length)
    reference, reference_bf16 = (sentence_transformers.SentenceTransformer(
        str(folder), device="cpu", model_kwargs={"dtype": dtype, "attn_implementation": "eager"})
        for dtype in (torch.float32, torch.bfloat16))
    config = ours.bert.config
    print(f"minibert verify {folder}: {config.model_type}, {config.num_hidden_layers} layers, {config.hidden_size} "
          f"dims, at most {ours.tokenizer.max_length} tokens; {len(texts)} sentences; paths: "
          f"{', '.join(LABELS[p] for p in paths)}")

    failures = 0
    tokenize = getattr(reference, "preprocess", None) or reference.tokenize  # (sentence-transformers < 6: tokenize)
    ids_ok = all(torch.equal(ours.tokenizer([text]).input_ids, tokenize([text])["input_ids"]) for text in texts)
    print(f"token ids equal to sentence-transformers' tokenizer's: {'yes' if ids_ok else 'NO'}")
    failures += not ids_ok

    layered = [name for name in encoders if name != "int8"]  # int8 is held by its embeddings only
    worst = {name: [] for name in layered}  # per layer: (largest difference, largest tolerance, failed)
    for start in range(0, len(texts), batch_size):
        batch = ours.tokenizer(texts[start:start + batch_size])
        real = batch.attention_mask.bool()
        with torch.inference_mode():
            theirs, theirs_bf16 = (model[0].auto_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                                       output_hidden_states=True).hidden_states
                                   for model in (reference, reference_bf16))
            # each batch and layer is held to its own tolerance: (fp32, bf16)
            held_to = [tolerances(b[real], c[real], BF16_HIDDEN_ULPS) for b, c in zip(theirs, theirs_bf16, strict=True)]
            for name in layered:
                mine = encoders[name].bert(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                                           output_hidden_states=True).hidden_states
                for layer, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                    diff = float((a[real].float() - b[real]).abs().max())
                    tol = held_to[layer][PATHS[name][1] == torch.bfloat16]
                    if len(worst[name]) <= layer:
                        worst[name].append((0.0, tol, False))
                    was = worst[name][layer]
                    worst[name][layer] = (max(was[0], diff), max(was[1], tol), was[2] or diff > tol)

    if layered:
        print("\nhidden states, max |difference| with transformers (real tokens; tolerance in brackets)")
        print(f"{'layer':12}" + "".join(f"{LABELS[name]:>24}" for name in layered))
    for layer in range(config.num_hidden_layers + 1 if layered else 0):
        cells = []
        for name in layered:
            diff, tol, failed = worst[name][layer]
            failures += failed
            cells.append(f"{diff:.1e} [{tol:.0e}]{' FAIL' if failed else ''}")
        print(f"{'embeddings' if layer == 0 else f'after {layer}':12}" + "".join(f"{c:>24}" for c in cells))

    expected, expected_bf16 = (torch.as_tensor(model.encode(texts, batch_size=batch_size)).float()
                               for model in (reference, reference_bf16))
    print("\nsentence embeddings, max |difference| with sentence-transformers (tolerance in brackets)")
    held_to = tolerances(expected, expected_bf16, BF16_EMBEDDING_ULPS)
    for name, encoder in encoders.items():
        got = torch.as_tensor(encoder.encode(texts, batch_size=batch_size)).float()
        diff = float((got - expected).abs().max())
        if name == "int8":
            cosine = torch.nn.functional.cosine_similarity(got, expected)
            failed = cosine.min() < INT8_LOWEST_COSINE or cosine.mean() < INT8_MEAN_COSINE
            print(f"  {LABELS[name]:15} {diff:.1e}, cosine lowest {float(cosine.min()):.4f} "
                  f"[{INT8_LOWEST_COSINE}], mean {float(cosine.mean()):.4f} [{INT8_MEAN_COSINE}]"
                  f"{' FAIL' if failed else ''}")
        else:
            tol = held_to[PATHS[name][1] == torch.bfloat16]
            failed = diff > tol
            print(f"  {LABELS[name]:15} {diff:.1e} [{tol:.0e}]{' FAIL' if failed else ''}")
        failures += bool(failed)
    print(f"\n{'OK: every difference is within its tolerance' if not failures else f'{failures} check(s) FAILED'}")
    return 1 if failures else 0

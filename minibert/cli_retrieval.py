"""The retrieval commands: ``minibert search`` (the closest corpus entries to each query) and ``minibert mine``
(the most similar pairs among sentences), scored by the model folder's similarity function unless --score
names one, and ``minibert communities`` (groups of near-duplicates, by cosine)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from minibert.cli import SCORES, add_model_args, gather_sentences, load_encoder, options
from minibert.files import read_embeddings, read_lines
from minibert.show import short


def model_score(args: argparse.Namespace, encoder=None) -> str:
    """--score, else the similarity function the model folder names (config_sentence_transformers.json)."""
    if args.score:
        return args.score
    if encoder is not None:
        return encoder.settings.similarity_fn_name
    from minibert.encode_settings import EncodeSettings
    from minibert.hub import resolve_model

    folder = resolve_model(args.model)
    return EncodeSettings.from_folder(folder).similarity_fn_name if (folder / "modules.json").is_file() else "cosine"


def nothing_to_encode(args: argparse.Namespace) -> None:
    """Options for encoding texts, where none is encoded (every input a .npy of embeddings): an error naming them."""
    given = [f"--{name.replace('_', '-')}" for name in ("prompt_name", "prompt", "truncate_dim")
             if getattr(args, name) is not None]
    if given or getattr(args, "sentences", None):
        raise ValueError(f"{' '.join(given) or 'sentences'} given, but nothing is encoded: the input is a .npy of "
                         "embeddings made already")


def cmd_search(args: argparse.Namespace) -> int:
    from minibert.search import semantic_search

    paths = {"corpus": args.corpus, "queries": args.queries}
    texts = {role: None if path.endswith(".npy") else read_lines(path, option=f"--{role}")
             for role, path in paths.items()}
    encodes = any(t is not None for t in texts.values())
    if not encodes:
        nothing_to_encode(args)
    encoder = load_encoder(args) if encodes else None
    score = model_score(args, encoder)

    def embed(role: str) -> np.ndarray:  # a text file is embedded now, a .npy was embedded before
        if texts[role] is None:
            return read_embeddings(paths[role])
        # as sentence-transformers' retrieval runs: the folder's query or document prompt (unless one is given)
        # and its query or document token limit
        method = encoder.encode_query if role == "queries" else encoder.encode_document
        return method(texts[role], batch_size=args.batch_size, show_progress_bar=args.progress, **options(args))

    corpus, queries = embed("corpus"), embed("queries")
    corpus_texts, query_texts = texts["corpus"], texts["queries"]
    results = semantic_search(queries, corpus, top_k=args.top_k, score=score)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            for i, hits in enumerate(results):
                f.write(json.dumps({"query": i, "hits": hits}) + "\n")
        print(f"{len(results)} queries, top {args.top_k} hits each by {score}: {args.output}")
        return 0
    print(f"top {args.top_k} by {score}")
    for i, hits in enumerate(results):
        print(f"[{i}] {query_texts[i] if query_texts else ''}")
        for hit in hits:
            text = corpus_texts[hit["corpus_id"]] if corpus_texts else ""
            print(f"    {hit['score']:.4f}  [{hit['corpus_id']}] {short(text, 70)}")
    return 0


def sentences_or_embeddings(args: argparse.Namespace) -> tuple[list[str] | None, np.ndarray, object]:
    """(the texts, or None for a .npy given as --input; their embeddings; the encoder, or None)."""
    if args.input and args.input.endswith(".npy"):
        nothing_to_encode(args)
        return None, read_embeddings(args.input), None
    texts = gather_sentences(args, at_least=2)
    encoder = load_encoder(args)
    emb = encoder.encode(texts, batch_size=args.batch_size, show_progress_bar=args.progress, **options(args))
    return texts, emb, encoder


def cmd_mine(args: argparse.Namespace) -> int:
    from minibert.search import paraphrase_mining

    texts, emb, encoder = sentences_or_embeddings(args)
    score = model_score(args, encoder)
    pairs = paraphrase_mining(emb, top_k=args.top_k, max_pairs=args.max_pairs, score=score)
    print(f"the {min(len(pairs), args.max_pairs)} closest pairs by {score}")
    for score, i, j in pairs:
        a, b = (texts[i], texts[j]) if texts else ("", "")
        print(f"{score:.4f}  [{i}] {short(a)!r}  <->  [{j}] {short(b)!r}")
    return 0


def cmd_communities(args: argparse.Namespace) -> int:
    from minibert.inputs import whole_number
    from minibert.search import community_detection, cosine_threshold

    cosine_threshold(args.threshold, "--threshold")  # (checked before any work)
    whole_number("--min-size", args.min_size)
    texts, emb, _ = sentences_or_embeddings(args)
    communities = community_detection(emb, threshold=args.threshold, min_community_size=args.min_size)
    print(f"{len(communities)} communities of at least {args.min_size} entries at a cosine of at least "
          f"{args.threshold} to their centre, largest first")
    for k, community in enumerate(communities):
        print(f"[{k}] {len(community)} entries")
        for i in community:
            print(f"    [{i}] {short(texts[i]) if texts else ''}")
    return 0


def add_retrieval_commands(sub) -> None:
    """The search, mine and communities commands, on the command line's subparsers."""
    p = sub.add_parser("search", help="the closest corpus entries to each query (text files or .npy embeddings); "
                       "texts are embedded as encode_query and encode_document embed them")
    add_model_args(p, sentences=False)
    p.add_argument("--corpus", required=True, help="one entry a line, or a .npy saved by `minibert encode`")
    p.add_argument("--queries", required=True, help="one query a line, or a .npy")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--output", help="write one JSON line per query here instead of printing")
    add_score_and_progress(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("mine", help="the most similar pairs among sentences (duplicate candidates)")
    add_model_args(p)  # --input may also be a .npy of embeddings
    p.add_argument("--top-k", type=int, default=5, help="neighbours considered for each entry")
    p.add_argument("--max-pairs", type=int, default=20, help="how many pairs to print")
    add_score_and_progress(p)
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("communities", help="groups of near-duplicates among sentences (community detection)")
    add_model_args(p)  # --input may also be a .npy of embeddings
    p.add_argument("--threshold", type=float, default=0.75, help="the least cosine of a member to its centre")
    p.add_argument("--min-size", type=int, default=10, help="the fewest entries of a community, its centre included")
    add_score_and_progress(p, score=False)  # (communities are by cosine, as in sentence-transformers)
    p.set_defaults(func=cmd_communities)


def add_score_and_progress(p, score: bool = True) -> None:
    if score:
        p.add_argument("--score", choices=SCORES, default=None,
                       help="how to compare embeddings (default: the model folder's similarity_fn_name, else cosine)")
    p.add_argument("--progress", action="store_true", help="show a progress bar while embedding")

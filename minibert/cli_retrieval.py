"""The retrieval commands: ``minibert search`` (the closest corpus entries to each query) and ``minibert mine``
(the most similar pairs among sentences), scored by the model folder's similarity function unless --score
names one, and ``minibert communities`` (groups of near-duplicates, by cosine)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from minibert.cli import gather_sentences, load_encoder, options
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
    if all(t is None for t in texts.values()):
        nothing_to_encode(args)
    encoder = load_encoder(args) if any(t is not None for t in texts.values()) else None
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
    from minibert.search import community_detection

    texts, emb, _ = sentences_or_embeddings(args)
    communities = community_detection(emb, threshold=args.threshold, min_community_size=args.min_size)
    print(f"{len(communities)} communities of at least {args.min_size} entries at a cosine of at least "
          f"{args.threshold} to their centre, largest first")
    for k, community in enumerate(communities):
        print(f"[{k}] {len(community)} entries")
        for i in community:
            print(f"    [{i}] {short(texts[i]) if texts else ''}")
    return 0

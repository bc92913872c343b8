"""A small web app over minibert: a similarity matrix, semantic search, and a multi-task model's predictions.

    make app        # or: python -m streamlit run scripts/app.py -- [--model M] [--multitask FOLDER]

Streamlit runs this file top to bottom on every interaction, so the models are cached
(``st.cache_resource``) and each tab does its work only when its form is submitted. Results are
``st.table``s (plain HTML), which a browser test can read. Everything shown comes from the same
library calls as the command line: ``encode``, ``cos_sim``, ``semantic_search``, ``predict``.
"""

from __future__ import annotations

import argparse
import sys

import streamlit as st
import torch

from minibert.files import split_lines
from minibert.hub import DEFAULT_MODEL
from minibert.multitask import MultiTaskModel
from minibert.paths import PATHS
from minibert.predict import predict, predict_pairs
from minibert.search import semantic_search
from minibert.sentence import SentenceEncoder
from minibert.show import format_prediction, short
from minibert.similarity import SIMILARITIES, cos_sim

SENTENCES = """A man is playing a guitar.
Someone is playing an instrument.
A chef is cooking pasta in the kitchen.
The stock market fell sharply today."""

CORPUS = """A man is eating food.
A man is eating a piece of bread.
The girl is carrying a baby.
A man is riding a horse.
A woman is playing violin.
Two men pushed carts through the woods.
A man is riding a white horse on an enclosed ground.
A monkey is playing drums.
A cheetah is running behind its prey."""


def parse_args() -> argparse.Namespace:
    """Streamlit hands the arguments after ``--`` to the script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="sentence-embedding model: name or folder")
    parser.add_argument("--multitask", default="", help="a trained multi-task folder (tasks.json), optional")
    parser.add_argument("--path", choices=PATHS, default=None,
                        help="the execution path (minibert.paths; default: the device's, fast on the CPU)")
    return parser.parse_args(sys.argv[1:])


@st.cache_resource(show_spinner="Loading the model...")
def load_encoder(model: str, path: str | None) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(model, path=path)


@st.cache_resource(show_spinner="Loading the multi-task model...")
def load_multitask(folder: str, path: str | None) -> MultiTaskModel:
    return MultiTaskModel.load(folder, path=path)


def lines_of(text: str) -> list[str]:
    """The non-blank lines of a text box."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def similarity_tab(encoder: SentenceEncoder) -> None:
    inputs, results = st.columns([2, 3])
    with inputs, st.form("similarity"):
        text = st.text_area("Sentences, one a line", SENTENCES, height=150)
        submitted = st.form_submit_button("Compare")
    sentences = lines_of(text)
    if not submitted:
        return
    if len(sentences) < 2:
        results.error("Give at least two sentences.")
        return
    sim = cos_sim(encoder.encode(sentences))
    names = [f"[{i}] {short(s, 30)}" for i, s in enumerate(sentences)]
    results.table({"sentence": names} | {f"[{j}]": [f"{v:.4f}" for v in sim[:, j]] for j in range(len(sentences))})
    off_diagonal = sim - 2 * torch.eye(len(sentences)).numpy()  # a sentence is not its own best match
    i, j = divmod(int(off_diagonal.argmax()), len(sentences))
    results.markdown(f"Most similar pair: **[{i}]** and **[{j}]**, cosine {sim[i, j]:.4f}")


def search_tab(encoder: SentenceEncoder) -> None:
    inputs, output = st.columns([2, 3])
    with inputs, st.form("search"):
        queries_text = st.text_area("Queries, one a line", "A man is eating pasta.", height=70)
        corpus_text = st.text_area("Corpus, one entry a line", CORPUS, height=200)
        upload = st.file_uploader("...or upload a text file (UTF-8, one entry a line)", type=["txt"])
        top_k = st.number_input("Hits per query", min_value=1, max_value=100, value=3)
        names = list(SIMILARITIES)
        score = st.radio("Score", names, index=names.index(encoder.settings.similarity_fn_name), horizontal=True,
                         help="how to compare embeddings; by default the model's own (its similarity_fn_name)")
        submitted = st.form_submit_button("Search")
    if not submitted:
        return
    try:
        corpus = split_lines(upload.getvalue(), upload.name) if upload is not None else lines_of(corpus_text)
        queries = lines_of(queries_text)
        if not corpus or not queries:
            raise ValueError("the corpus and the queries need at least one line each")
        results = semantic_search(encoder.encode(queries), encoder.encode(corpus), top_k=int(top_k), score=score)
    except ValueError as e:
        output.error(str(e))
        return
    for query, hits in zip(queries, results, strict=True):
        output.markdown(f"**{query}**")
        output.table({"rank": [r + 1 for r in range(len(hits))], "score": [f"{h['score']:.4f}" for h in hits],
                  "corpus_id": [h["corpus_id"] for h in hits], "entry": [corpus[h["corpus_id"]] for h in hits]})


def prediction_cells(model: MultiTaskModel, rows: list[dict], key: str) -> dict[str, list[str]]:
    """One column per task that answered, one formatted cell per row, plus the input column ``key``."""
    columns = {key: [row[key] for row in rows]}
    for name, task in model.tasks.items():
        if name in rows[0]:
            columns[name] = [format_prediction(task, row[name]) for row in rows]
    return columns


def multitask_tab(folder: str, path: str | None) -> None:
    folder = st.text_input("Trained multi-task folder (with tasks.json)", folder)
    if not folder:
        st.info("Give a folder saved by `scripts/train.py` (for one made in a minute: `make train-quick`).")
        return
    try:
        model = load_multitask(folder, path)
    except (FileNotFoundError, ValueError) as e:
        st.error(str(e))
        return
    st.caption("Tasks: " + ", ".join(f"{name} ({task.type})" for name, task in model.tasks.items()))
    inputs, output = st.columns([2, 3])
    with inputs, st.form("predict"):
        text = st.text_area("Sentences, one a line", "Angela Merkel met Emmanuel Macron in Paris on Monday.\n"
                            "What a wonderful, heartfelt film.", height=100)
        first = st.text_area("Pairs: first sentences", "A man is playing a guitar on stage.", height=70)
        second = st.text_area("Pairs: second sentences (line i pairs with line i)", "A musician is performing.",
                              height=70)
        submitted = st.form_submit_button("Predict")
    if not submitted:
        return
    sentences, a, b = lines_of(text), lines_of(first), lines_of(second)
    if len(a) != len(b):
        output.error(f"The pairs need as many second sentences as first ones ({len(a)} and {len(b)}).")
        return
    if sentences:
        output.table(prediction_cells(model, predict(model, sentences), "text"))
    if a:
        rows = predict_pairs(model, a, b)
        for row in rows:
            row["pair"] = f"{row['a']}  |  {row['b']}"
        output.table(prediction_cells(model, rows, "pair") | {"cosine": [f"{r['similarity']:.4f}" for r in rows]})


def main() -> None:
    args = parse_args()
    st.set_page_config(page_title="minibert", layout="wide")
    st.title("minibert")
    model = st.sidebar.text_input("Sentence-embedding model", args.model)
    try:
        encoder = load_encoder(model, args.path)
    except (FileNotFoundError, ValueError) as e:
        st.error(str(e))
        st.stop()
    config = encoder.bert.config
    st.sidebar.caption(f"{config.num_hidden_layers} layers, {config.hidden_size} dims, "
                       f"{' + '.join(encoder.pooling.config.modes)} pooling, {encoder.path} path")
    similarity, search, tasks = st.tabs(["Similarity", "Search", "Multi-task"])
    with similarity:
        similarity_tab(encoder)
    with search:
        search_tab(encoder)
    with tasks:
        multitask_tab(args.multitask, args.path)


main()

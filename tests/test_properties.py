"""Property-based tests (hypothesis) of what runs on text and numbers from outside: the tokenizer against
transformers' on any Unicode, ``encode`` whatever the batching, packing, and search against brute force.

The files minibert reads, and the command line, are fuzzed in ``test_fuzz_inputs.py``. CI runs a fixed
set of examples (the "ci" profile in conftest.py: derandomized); ``HYPOTHESIS_PROFILE=explore`` draws new
ones on every run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minibert.paths.fast import Packing
from minibert.search import paraphrase_mining, semantic_search

transformers = pytest.importorskip("transformers", reason="transformers' tokenizer is the reference")

SPECIALS = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[cls]", "[ SEP ]", "##", "\x00", "\t", "\r\n", "\u200b",
            "\ufeff", "\u0301", "e\u0301", "\U0001f600", "\u4e2d\u6587", "\u0645\u0631\u062d\u0628\u0627"]
# Any Unicode text (hypothesis leaves out lone surrogates, which UTF-8 cannot carry), with the special
# tokens, control and combining characters, emoji and scripts that tokenizers trip on mixed in.
TEXTS = st.lists(st.one_of(st.text(max_size=40), st.sampled_from(SPECIALS)), max_size=8).map("".join)
LONG = st.integers(100, 400).map(lambda n: " ".join(["word"] * n))  # beyond max_seq_length (256)


@pytest.fixture(scope="module")
def reference_tokenizer(minilm_dir):
    return transformers.AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def vocab_only_tokenizer(minilm_dir, tmp_path_factory):
    """The same model's tokenizer built from vocab.txt alone (no tokenizer.json)."""
    import shutil

    from minibert.tokenizer import Tokenizer

    folder = tmp_path_factory.mktemp("vocab-only")
    for name in ("vocab.txt", "tokenizer_config.json", "config.json", "sentence_bert_config.json", "modules.json"):
        shutil.copy(minilm_dir / name, folder / name)
    return Tokenizer.from_pretrained(folder)


@settings(max_examples=300)
@given(text=st.one_of(TEXTS, LONG))
def test_token_ids_equal_transformers_on_any_text(minilm, vocab_only_tokenizer, reference_tokenizer, text):
    expected = reference_tokenizer(text, truncation=True, max_length=minilm.tokenizer.max_length)["input_ids"]
    ours = minilm.tokenizer.encode([text], warn_truncation=False)[0].ids
    assert ours == expected
    assert vocab_only_tokenizer.encode([text], warn_truncation=False)[0].ids == expected
    pair = (text, text[::-1])  # as lists, the way sentence-transformers' CrossEncoder calls it ("" is a text)
    expected = reference_tokenizer([pair[0]], [pair[1]], truncation=True, max_length=minilm.tokenizer.max_length)
    batch = minilm.tokenizer([pair])
    assert batch.input_ids[0].tolist() == expected["input_ids"][0]
    assert batch.token_type_ids[0].tolist() == expected["token_type_ids"][0]


POOL = ["", "a", "A man is playing a guitar.", "[CLS] [SEP] [MASK]", "\U0001f600 \u4e2d\u6587 caf\u00e9",
        "The stock market fell sharply today after the report on inflation came out higher than expected.",
        " ".join(["long"] * 300), "\t\n", "Kids run.", "A dog barks at the mailman.", "x" * 50, "Stocks fell."]


@pytest.fixture(scope="module")
def pool_embeddings(minilm):
    return np.stack([minilm.encode(s) for s in POOL])  # one by one: no batching at all


@settings(max_examples=40)
@given(order=st.permutations(range(len(POOL))), batch_size=st.integers(1, len(POOL) + 2),
       path=st.sampled_from(["fast", "reference"]))
def test_encode_is_the_same_whatever_the_batch_and_order(minilm, pool_embeddings, order, batch_size, path):
    emb = minilm.encode([POOL[i] for i in order], batch_size=batch_size, path=path)
    np.testing.assert_allclose(emb, pool_embeddings[order], atol=1e-6, rtol=0)


@settings(max_examples=30)
@given(texts=st.lists(TEXTS, min_size=1, max_size=6), batch_size=st.integers(1, 4))
def test_encode_any_texts_is_finite_and_batch_free(minilm, texts, batch_size):
    emb = minilm.encode(texts, batch_size=batch_size)
    assert emb.shape == (len(texts), 384) and np.isfinite(emb).all()
    np.testing.assert_allclose(emb, np.stack([minilm.encode(t) for t in texts]), atol=1e-6, rtol=0)


@st.composite
def masks(draw) -> torch.Tensor:
    """(B, L) masks of any pattern: right padding, holes, all-zero rows, no padding at all, B = 0."""
    B, L = draw(st.integers(0, 6)), draw(st.integers(1, 9))
    return torch.tensor(draw(st.lists(st.lists(st.integers(0, 1), min_size=L, max_size=L), min_size=B, max_size=B)),
                        dtype=torch.long).reshape(B, L)


@settings(max_examples=300)
@given(mask=masks(), width=st.integers(1, 5))
def test_pack_then_unpack_gives_back_the_input(mask, width):
    B, L = mask.shape
    x = torch.randn(B, L, width)
    packing = Packing.from_mask(mask)
    packed = packing.pack(x)
    assert torch.equal(packed, x[mask.bool()])  # the real tokens, in order
    assert packing.cu_seqlens.tolist() == [0, *np.cumsum(mask.sum(1).tolist()).tolist()]
    assert torch.equal(packing.unpack(packed), x * mask[..., None])


FINITE = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def embedding_sets(draw) -> tuple[np.ndarray, np.ndarray]:
    dim = draw(st.integers(1, 6))
    rows = st.lists(FINITE, min_size=dim, max_size=dim)
    queries = np.array(draw(st.lists(rows, min_size=1, max_size=4)), dtype=np.float32)
    corpus = np.array(draw(st.lists(rows, min_size=1, max_size=12)), dtype=np.float32)
    return queries, corpus


@settings(max_examples=200)
@given(sets=embedding_sets(), top_k=st.integers(1, 15), chunk=st.integers(1, 5), score=st.sampled_from(["cos", "dot"]))
def test_search_equals_brute_force_whatever_the_chunking(sets, top_k, chunk, score):
    queries, corpus = (torch.from_numpy(a).double() for a in sets)
    if score == "cos":
        queries, corpus = (torch.nn.functional.normalize(a, dim=-1) for a in (queries, corpus))
    exact = (queries @ corpus.T).numpy()
    for q, hits in enumerate(semantic_search(*sets, top_k=top_k, score=score, chunk_size=chunk)):
        assert len(hits) == min(top_k, len(corpus))
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        best = np.sort(exact[q])[::-1][:len(hits)]
        np.testing.assert_allclose(scores, best, atol=1e-3 * max(1.0, np.abs(exact).max()), rtol=1e-4)
        for h in hits:  # each hit's score is its own entry's
            assert h["score"] == pytest.approx(exact[q, h["corpus_id"]], abs=1e-3 * max(1.0, np.abs(exact).max()))


@settings(max_examples=100)
@given(sets=embedding_sets(), extra=st.sampled_from([np.nan, np.inf, -np.inf]), row=st.integers(0, 11))
def test_nan_or_infinite_embeddings_are_an_error_naming_the_row(sets, extra, row):
    queries, corpus = sets
    row = row % len(corpus)
    corpus[row, 0] = extra
    with pytest.raises(ValueError, match=f"corpus embeddings: row {row} holds NaN or infinite values"):
        semantic_search(queries, corpus, chunk_size=3)
    with pytest.raises(ValueError, match=f"embeddings: row {row} holds NaN"):
        paraphrase_mining(corpus)

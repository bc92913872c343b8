"""Embeddings in fewer bits (minibert/embedding_precision.py, encode's ``precision``) against sentence-transformers'
``quantize_embeddings`` and ``encode(precision=...)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minibert.embedding_precision import PRECISIONS, quantize_embeddings

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
from sentence_transformers.util import quantize_embeddings as st_quantize  # noqa: E402


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_same_floats_give_sentence_transformers_integers(precision):
    """Bit for bit, on floats with ties at zero, a dimension that never varies and a width not a multiple of 8;
    with ranges taken from the embeddings, from calibration embeddings, and given."""
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(37, 21, generator=generator).numpy()
    embeddings[3, :5] = 0.0
    embeddings[:, 7] = 0.25
    calibration = torch.randn(50, 21, generator=generator).numpy() * 0.5
    ranges = np.vstack((embeddings.min(0) - 0.1, embeddings.max(0) + 0.1))
    for kwargs in ({}, {"calibration": calibration}, {"ranges": ranges}):
        theirs_kwargs = {"calibration_embeddings": kwargs["calibration"]} if "calibration" in kwargs else kwargs
        ours, theirs = quantize_embeddings(embeddings, precision, **kwargs), st_quantize(embeddings, precision,
                                                                                        **theirs_kwargs)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


def test_int8_ranges_need_more_than_one_embedding_and_bad_input_is_named():
    with pytest.raises(ValueError, match="int8 ranges cannot be computed from a single embedding"):
        quantize_embeddings(np.ones((1, 4), dtype=np.float32), "int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize_embeddings(np.ones((2, 4), dtype=np.float32), "int4")
    with pytest.raises(ValueError, match="must be floats, got int8"):
        quantize_embeddings(np.ones((2, 4), dtype=np.int8), "binary")


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_encode_with_a_precision_is_sentence_transformers(minilm, minilm_dir, sentences, precision):
    """encode(precision=...) quantizes what encode() gives, as sentence-transformers' encode does. The float
    embeddings agree to float rounding (about 1e-7), which can move a value that sits on a bucket's edge by one
    bucket (or a value at zero by its sign): at most one step apart, and nearly all equal."""
    ours = minilm.encode(sentences, precision=precision)
    np.testing.assert_array_equal(ours, quantize_embeddings(minilm.encode(sentences), precision))
    assert torch.equal(minilm.encode(sentences, precision=precision, convert_to="torch"), torch.from_numpy(ours))
    theirs = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(sentences, precision=precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if precision.endswith("binary"):  # the bits themselves (binary holds the packed byte minus 128)
        shift = 128 if precision == "binary" else 0
        ours, theirs = (np.unpackbits((q.astype(np.int16) + shift).astype(np.uint8)) for q in (ours, theirs))
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    assert (ours == theirs).mean() > 0.99
    single = minilm.encode(sentences[0], precision="ubinary")
    assert single.shape == (48,) and np.array_equal(single, minilm.encode(sentences[:1], precision="ubinary")[0])
    with pytest.raises(ValueError, match="cannot be computed from a single embedding"):
        minilm.encode(sentences[0], precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        minilm.encode(sentences, precision="int4")

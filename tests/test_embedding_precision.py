"""Embeddings in fewer bits (minibert/embedding_precision.py, encode's ``precision``) against sentence-transformers'
``quantize_embeddings`` and ``encode(precision=...)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minibert.embedding_precision import PRECISIONS, quantize_embeddings


@pytest.fixture(scope="module")
def st():
    return pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("form", ["float32", "float64", "float32 tensor", "float64 tensor", "bfloat16 tensor",
                                  "float16 tensor"])
def test_the_same_floats_give_sentence_transformers_integers(st, precision, form):
    """Bit for bit, on floats with ties at zero, a dimension that never varies and a width not a multiple of 8, in
    NumPy or torch and each float dtype; with ranges taken from the embeddings, from calibration embeddings, and
    given."""
    from sentence_transformers.util import quantize_embeddings as theirs

    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(37, 21, generator=generator, dtype=torch.float64)
    embeddings[3, :5] = 0.0
    embeddings[:, 7] = 0.25
    embeddings = embeddings.to(getattr(torch, form.split()[0]))
    embeddings = embeddings if form.endswith("tensor") else embeddings.numpy()
    calibration = torch.randn(50, 21, generator=generator).numpy() * 0.5
    ranges = np.vstack((calibration.min(0) - 0.1, calibration.max(0) + 0.1))
    for kwargs in ({}, {"calibration_embeddings": calibration}, {"ranges": ranges}):
        ours, reference = quantize_embeddings(embeddings, precision, **kwargs), theirs(embeddings, precision, **kwargs)
        assert ours.dtype == reference.dtype and ours.shape == reference.shape
        np.testing.assert_array_equal(ours, reference)


def test_one_embedding_gives_no_ranges_and_bad_input_is_named():
    vector = np.linspace(-1, 1, 16, dtype=np.float32)
    for one in (vector, vector[None]):  # one embedding, as a vector or as a row
        with pytest.raises(ValueError, match="int8 ranges cannot be computed from a single embedding"):
            quantize_embeddings(one, "int8")
        assert quantize_embeddings(one, "ubinary").tolist() == ([0, 255] if one.ndim == 1 else [[0, 255]])
    assert quantize_embeddings(vector, "uint8", calibration_embeddings=np.stack([vector, -vector])).shape == (16,)
    with pytest.raises(ValueError, match="precision must be one of"):
        quantize_embeddings(vector[None], "int4")
    with pytest.raises(ValueError, match="must not be quantized already, got int8"):
        quantize_embeddings(np.ones((2, 4), dtype=np.int8), "binary")


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_encode_with_a_precision_is_sentence_transformers(st, minilm, minilm_dir, sentences, precision):
    """encode(precision=...) quantizes what encode() gives, normalised and truncated first, as
    sentence-transformers' encode does. The float embeddings agree to float rounding (about 1e-7), which can move
    a value that sits on a bucket's edge by one bucket (or a value at zero by its sign): at most one step apart,
    and nearly all equal."""
    options = {"normalize_embeddings": True, "truncate_dim": 100}
    ours = minilm.encode(sentences, precision=precision, **options)
    np.testing.assert_array_equal(ours, quantize_embeddings(minilm.encode(sentences, **options), precision))
    assert torch.equal(minilm.encode(sentences, precision=precision, convert_to="torch", **options),
                       torch.from_numpy(ours))
    theirs = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(sentences, precision=precision, **options)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if precision.endswith("binary"):  # the bits themselves (binary holds the packed byte minus 128)
        shift = 128 if precision == "binary" else 0
        ours, theirs = (np.unpackbits((q.astype(np.int16) + shift).astype(np.uint8)) for q in (ours, theirs))
    else:
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    assert (ours == theirs).mean() > 0.99
    dim = minilm.embedding_dim
    single = minilm.encode(sentences[0], precision="ubinary")
    assert single.shape == (-(-dim // 8),)
    assert np.array_equal(single, minilm.encode(sentences[:1], precision="ubinary")[0])
    with pytest.raises(ValueError, match="cannot be computed from a single embedding"):
        minilm.encode(sentences[0], precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        minilm.encode(sentences, precision="int4")
    assert np.array_equal(minilm.encode(sentences, precision=None), minilm.encode(sentences))

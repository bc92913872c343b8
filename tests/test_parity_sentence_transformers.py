"""Parity with sentence_transformers.SentenceTransformer loaded from the same folder, every pooling mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from minibert import SentenceEncoder
from minibert.pooling import LEGACY_KEYS, POOLING_MODES

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the parity reference")


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_default_model_embeddings_match(minilm_dir, minilm, sentences, path):
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu")
    ref = reference.encode(sentences, batch_size=7)
    ours = minilm.encode(sentences, batch_size=7, path=path)
    assert ours.shape == ref.shape == (len(sentences), 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    assert minilm.normalize  # modules.json lists Normalize
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


POOLING_CONFIGS = [{"pooling_mode": mode} for mode in POOLING_MODES] + [
    {"pooling_mode": ["mean", "cls", "max"]},  # new format: concatenated in the order given
    {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True},  # legacy
]


@pytest.mark.parametrize("pooling", POOLING_CONFIGS, ids=lambda c: "+".join(
    c["pooling_mode"] if isinstance(c["pooling_mode"], list) else [c["pooling_mode"]]) if "pooling_mode" in c
    else "legacy-" + "+".join(LEGACY_KEYS[k] for k in c))
@pytest.mark.parametrize("normalize", [True, False], ids=["normalize", "raw"])
def test_every_pooling_mode_matches(model_copy, sentences, pooling, normalize):
    folder = model_copy()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, **pooling}))
    if not normalize:
        modules = [m for m in json.loads((folder / "modules.json").read_text()) if not m["type"].endswith("Normalize")]
        (folder / "modules.json").write_text(json.dumps(modules))
    reference = st.SentenceTransformer(str(folder), device="cpu")
    ours = SentenceEncoder.from_pretrained(folder)
    ref = reference.encode(sentences, batch_size=8, convert_to_tensor=True)
    out = ours.encode(sentences, batch_size=8, convert_to="torch")
    assert out.shape == ref.shape
    assert_close(out, ref.cpu(), atol=1e-5, rtol=0)
    assert ours.normalize == normalize


def test_padding_never_leaks_into_pooled_vectors(model_copy, sentences):
    """A sentence alone and beside much longer ones: the same embedding within 1e-6, every mode."""
    folder = model_copy()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": list(POOLING_MODES)}))
    encoder = SentenceEncoder.from_pretrained(folder)
    short = sentences[1]
    long_ones = [s for s in sentences if len(s) > 120]
    assert long_ones
    alone = encoder.encode([short], convert_to="torch")
    batch = encoder.tokenizer([short] + long_ones)
    assert batch.attention_mask[0].sum() < batch.attention_mask.shape[1] / 5, "short sentence is mostly padding"
    with torch.no_grad():
        together = encoder(batch)[:1]
    assert_close(together, alone, atol=1e-6, rtol=0)


def long_texts(sentences: list[str]) -> list[str]:
    """Texts of about 60 to 400 tokens: most are longer than a 128-token limit."""
    return [" ".join(sentences[i:] + sentences[:i]) * (1 + i % 3) for i in range(0, len(sentences), 3)]


@pytest.mark.parametrize("form", ["sentence-transformers 6", "older sentence-transformers", "plain Hugging Face"])
def test_the_token_limit_is_read_as_sentence_transformers_reads_it(model_copy, tmp_path, sentences, form):
    """sentence-transformers 6 keeps the limit in tokenizer_config.json (model_max_length) and writes
    sentence_bert_config.json without max_seq_length; older versions wrote max_seq_length there; a plain
    folder has only tokenizer_config.json. Inputs longer than the limit must embed as the reference does."""
    folder = model_copy()
    if form == "sentence-transformers 6":
        saved = st.SentenceTransformer(str(folder), device="cpu")
        saved.max_seq_length = 128
        saved.save(str(tmp_path / "st6"))
        folder = tmp_path / "st6"
        assert "max_seq_length" not in json.loads((folder / "sentence_bert_config.json").read_text())
    elif form == "older sentence-transformers":
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    else:
        for name in ("modules.json", "sentence_bert_config.json"):
            (folder / name).unlink()
        config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 128}))
    reference = st.SentenceTransformer(str(folder), device="cpu")
    ours = SentenceEncoder.from_pretrained(folder)
    assert reference.max_seq_length == ours.tokenizer.max_length == 128
    texts = long_texts(sentences)
    lengths = [len(e.ids) for e in ours.tokenizer.encode(texts, warn_truncation=False)]
    assert sum(n == 128 for n in lengths) > len(texts) / 2  # most were cut
    ref = reference.encode(texts, batch_size=8, convert_to_tensor=True)
    assert_close(ours.encode(texts, batch_size=8, convert_to="torch"), ref.cpu(), atol=1e-5, rtol=0)


def test_encode_s_input_and_output_forms_match_sentence_transformers(minilm_dir, minilm, sentences):
    """A tuple or a NumPy array of texts, sentence-transformers' convert_to_tensor and convert_to_numpy flags, a NumPy
    integer truncate_dim, and token embeddings: each as sentence-transformers gives it."""
    st = pytest.importorskip("sentence_transformers")
    theirs = st.SentenceTransformer(str(minilm_dir), device="cpu")
    expected = theirs.encode(sentences, convert_to_tensor=True)
    for texts in (tuple(sentences), np.array(sentences)):
        assert_close(torch.from_numpy(minilm.encode(texts)), expected, atol=1e-5, rtol=0)
    got = minilm.encode(sentences, convert_to_tensor=True)
    assert isinstance(got, torch.Tensor)
    assert_close(got, expected, atol=1e-5, rtol=0)
    as_list = minilm.encode(sentences, convert_to_numpy=False)
    their_list = theirs.encode(sentences, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == len(their_list) and isinstance(as_list[0], torch.Tensor)
    assert_close(torch.stack(as_list), torch.stack(their_list), atol=1e-5, rtol=0)
    assert_close(minilm.encode(sentences, truncate_dim=np.int64(64), convert_to_tensor=True),
                 theirs.encode(sentences, truncate_dim=np.int64(64), convert_to_tensor=True), atol=1e-5, rtol=0)
    texts = [*sentences, "a much longer sentence, so that the batch has padding in it for the shorter ones"]
    their_tokens = theirs.encode(texts, output_value="token_embeddings", batch_size=4)
    for path in ("reference", "fast"):
        tokens = minilm.encode(texts, output_value="token_embeddings", batch_size=4, path=path)
        assert len(tokens) == len(their_tokens)
        for i, (ours, ref) in enumerate(zip(tokens, their_tokens, strict=True)):
            assert_close(ours, ref, atol=1e-5, rtol=0, msg=f"{path}: text {i}")
    assert_close(minilm.encode("one text", output_value="token_embeddings"),
                 theirs.encode("one text", output_value="token_embeddings"), atol=1e-5, rtol=0)

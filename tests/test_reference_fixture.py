"""minibert against a committed reference (scripts/make_reference_fixture.py), with only minibert's
own dependencies: this is the parity check that runs where transformers is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from minibert import DEFAULT_MODEL, SentenceEncoder

FIXTURE = Path(__file__).parent / "fixtures" / f"{DEFAULT_MODEL}-reference.npz"


def test_tokens_hidden_states_and_embeddings_match_the_fixture(minilm_dir):
    ref = np.load(FIXTURE)
    sentences = [str(s) for s in ref["sentences"]]
    encoder = SentenceEncoder.from_pretrained(minilm_dir, path="reference")
    batch = encoder.tokenizer(sentences)
    np.testing.assert_array_equal(batch.input_ids.numpy(), ref["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask.numpy(), ref["attention_mask"])
    for attn in ("eager", "sdpa"):
        encoder.bert.set_attn_implementation(attn)
        with torch.no_grad():
            hidden = encoder.bert(batch.input_ids, batch.attention_mask).last_hidden_state
        real = hidden[batch.attention_mask.bool()].numpy()
        np.testing.assert_allclose(real, ref["real_token_hidden_states"], atol=1e-5, rtol=0, err_msg=attn)
        np.testing.assert_allclose(encoder.encode(sentences), ref["embeddings"], atol=1e-5, rtol=0, err_msg=attn)
    np.testing.assert_allclose(SentenceEncoder.from_pretrained(minilm_dir).encode(sentences), ref["embeddings"],
                               atol=1e-5, rtol=0, err_msg="the default path")

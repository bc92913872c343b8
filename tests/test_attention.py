"""The hand-written attention and the fused SDPA path compute the same function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minibert import BertConfig, BertModel, SentenceEncoder
from minibert.model import eval_mode

# bf16 keeps 8 significant bits: one unit in the last place is 2^-5 = 0.031 for the largest hidden
# values of all-MiniLM-L6-v2 (|x| in [4, 8)) and 2^-9 ~ 0.002 around the 0.3 of a normalised
# embedding's biggest entries. The two paths round in different places, so we allow two such units
# on hidden states (0.0625) and about five on embeddings (1e-2); measured: 0.039 and 0.0027.
BF16_HIDDEN_ATOL = 0.0625
BF16_EMBEDDING_ATOL = 1e-2


def run_both(model: BertModel, ids, mask):
    outs = {}
    for attn in ("eager", "sdpa"):
        model.set_attn_implementation(attn)
        with torch.no_grad():
            outs[attn] = model(ids, mask).last_hidden_state
    return outs["eager"], outs["sdpa"]


def test_fp32_paths_agree_on_minilm(minilm_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(minilm_dir, path="reference")
    batch = encoder.tokenizer(sentences)
    eager, sdpa = run_both(encoder.bert, batch.input_ids, batch.attention_mask)
    real = batch.attention_mask.bool()  # padded positions are never read
    assert_close(eager[real], sdpa[real], atol=1e-5, rtol=0)


def test_fp32_paths_agree_on_a_random_model():
    config = BertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=64)
    model = BertModel(config).eval()
    ids = torch.randint(0, 50, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 2:] = 0
    eager, sdpa = run_both(model, ids, mask)
    real = mask.bool()
    assert_close(eager[real], sdpa[real], atol=1e-5, rtol=0)


def test_bf16_paths_agree_and_stay_close_to_fp32(minilm_dir, sentences):
    fp32 = SentenceEncoder.from_pretrained(minilm_dir, path="reference")
    bf16 = SentenceEncoder.from_pretrained(minilm_dir, dtype=torch.bfloat16, path="reference")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    batch = fp32.tokenizer(sentences)
    real = batch.attention_mask.bool()
    eager, sdpa = run_both(bf16.bert, batch.input_ids, batch.attention_mask)
    assert_close(eager[real].float(), sdpa[real].float(), atol=BF16_HIDDEN_ATOL, rtol=0)
    reference = fp32.encode(sentences, convert_to="torch")
    for attn in ("eager", "sdpa"):
        bf16.bert.set_attn_implementation(attn)
        emb = bf16.encode(sentences, convert_to="torch")
        assert emb.dtype == torch.bfloat16
        assert_close(emb.float(), reference, atol=BF16_EMBEDDING_ATOL, rtol=0)
        assert F.cosine_similarity(emb.float(), reference).min() > 0.999


def small_bert(attn: str, attention_dropout: float, hidden_dropout: float) -> tuple[BertModel, torch.Tensor]:
    """A 2-layer random BERT and a batch of ids, for the dropout tests."""
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, attention_probs_dropout_prob=attention_dropout,
                        hidden_dropout_prob=hidden_dropout)
    return BertModel(config, attn_implementation=attn), torch.randint(0, 50, (2, 12))


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_dropout_only_in_training(attn):
    model, ids = small_bert(attn, attention_dropout=0.5, hidden_dropout=0.0)
    model.eval()
    a, b = model(ids).last_hidden_state, model(ids).last_hidden_state
    assert torch.equal(a, b)
    model.train()
    c, d = model(ids).last_hidden_state, model(ids).last_hidden_state
    assert not torch.equal(c, d), f"{attn}: dropout should make two training passes differ"


def test_eval_mode_switches_dropout_off_and_restores_the_mode():
    model, ids = small_bert("eager", attention_dropout=0.5, hidden_dropout=0.5)
    model.eval()
    reference = model(ids).last_hidden_state
    model.train()
    with eval_mode(model):
        assert_close(model(ids).last_hidden_state, reference, atol=0, rtol=0)
    assert model.training and all(m.training for m in model.modules())
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training  # restored after an error too
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_set_dropout_reaches_every_dropout(attn):
    """set_dropout(0) must switch off the attention links too, not only the nn.Dropout modules."""
    model, ids = small_bert(attn, attention_dropout=0.5, hidden_dropout=0.5)
    model.eval()
    reference = model(ids).last_hidden_state
    model.train()
    model.set_dropout(0.0)
    assert_close(model(ids).last_hidden_state, reference, atol=0, rtol=0)
    assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0.0
    model.set_dropout(0.3)
    assert not torch.equal(model(ids).last_hidden_state, reference)
    with pytest.raises(ValueError, match="dropout must be in"):
        model.set_dropout(1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cuda_matches_cpu(minilm_dir, sentences, attn, monkeypatch):
    cpu = SentenceEncoder.from_pretrained(minilm_dir, attn_implementation=attn, path="reference")
    gpu = SentenceEncoder.from_pretrained(minilm_dir, device="cuda", attn_implementation=attn, path="reference")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # restored after the test
    assert_close(gpu.encode(sentences, convert_to="torch"), cpu.encode(sentences, convert_to="torch"),
                 atol=1e-5, rtol=0)

"""Parity with transformers.BertModel, built from the very same weights (after minGPT's HF import test)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from minibert import BertModel, Tokenizer
from minibert.weights import bert_key_map

transformers = pytest.importorskip("transformers", reason="transformers is the parity reference (pip install .[test])")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_minilm_hidden_states_match_transformers(minilm_dir, sentences, attn):
    ours = BertModel.from_pretrained(minilm_dir, attn_implementation=attn)
    batch = Tokenizer.from_pretrained(minilm_dir)(sentences)
    real = batch.attention_mask.bool()
    assert real.float().mean() < 0.6, "the batch should be heavily padded"
    with torch.no_grad():
        out = ours(batch.input_ids, batch.attention_mask, batch.token_type_ids)
        refs = {}
        for ref_attn in ("eager", "sdpa"):
            theirs = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation=ref_attn).eval()
            refs[ref_attn] = theirs(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    token_type_ids=batch.token_type_ids)
    # Same attention path as the reference: every position, padded ones included.
    assert_close(out.last_hidden_state, refs[attn].last_hidden_state, atol=1e-5, rtol=0)
    assert_close(out.pooler_output, refs[attn].pooler_output, atol=1e-5, rtol=0)
    # Either reference path: the real tokens. (Padded positions' outputs are never read; there the
    # two kernels' different summation orders differ by up to ~6e-5.)
    for ref in refs.values():
        assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], atol=1e-5, rtol=0)
        assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=0)


# Small random configurations: (transformers class, minibert sees prefix / pooler) x shapes x activations.
CASES = [
    # cls_name, layers, heads, hidden, intermediate, type_vocab, act
    ("BertModel", 2, 4, 32, 64, 2, "gelu"),
    ("BertModel-nopooler", 3, 2, 24, 48, 1, "gelu_new"),
    ("BertForSequenceClassification", 1, 8, 64, 128, 3, "relu"),  # "bert." prefix + classifier.*
    ("BertForTokenClassification", 2, 3, 48, 32, 2, "gelu"),  # "bert." prefix, no pooler
]


def build_reference(cls_name, layers, heads, hidden, inter, type_vocab, act):
    config = transformers.BertConfig(
        vocab_size=97, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=inter, hidden_act=act, max_position_embeddings=40, type_vocab_size=type_vocab,
        num_labels=5, attn_implementation="eager")
    if cls_name == "BertModel":
        return transformers.BertModel(config), "", True
    if cls_name == "BertModel-nopooler":
        return transformers.BertModel(config, add_pooling_layer=False), "", False
    model = getattr(transformers, cls_name)(config)
    return model, "bert.", model.bert.pooler is not None


def random_batch(vocab=97, type_vocab=2, B=4, L=17):
    ids = torch.randint(1, vocab, (B, L))
    lengths = torch.tensor([L, 3, 11, 1])
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    types = torch.randint(0, type_vocab, (B, L)) * mask
    return ids, mask, types


@pytest.mark.parametrize("case", CASES, ids=[c[0] + "-" + c[-1] for c in CASES])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_random_config_outputs_and_gradients_match(tmp_path, case, attn):
    reference, prefix, has_pooler = build_reference(*case)
    reference.save_pretrained(tmp_path)  # config.json + model.safetensors, as HF writes them
    ours = BertModel.from_pretrained(tmp_path, attn_implementation=attn)
    assert ours.load_report.prefix == prefix
    assert (ours.pooler is not None) == has_pooler
    assert ours.load_report.loaded == len(bert_key_map(case[1], has_pooler))
    if case[0].startswith("BertFor"):
        assert any(k.startswith("classifier.") for k in ours.load_report.skipped)

    ref_bert = reference if prefix == "" else reference.bert
    ref_bert.eval()
    ours.train(False)
    ids, mask, types = random_batch(type_vocab=case[5])
    out = ours(ids, mask, types)
    ref = ref_bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert_close(out.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=1e-5)

    # the gradient of one scalar loss w.r.t. every parameter
    probe = torch.randn_like(out.last_hidden_state)
    loss_ours = (out.last_hidden_state * probe * mask[..., None]).sum()
    loss_ref = (ref.last_hidden_state * probe * mask[..., None]).sum()
    if has_pooler:
        assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=1e-5)
        loss_ours = loss_ours + out.pooler_output.sum()
        loss_ref = loss_ref + ref.pooler_output.sum()
    loss_ours.backward()
    loss_ref.backward()
    ref_params = dict(ref_bert.named_parameters())
    key_map = bert_key_map(case[1], has_pooler)
    checked = 0
    for name, p in ours.named_parameters():
        ref_p = ref_params[key_map[name]]
        assert p.grad is not None, name
        assert_close(p.grad, ref_p.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"grad of {n}: {m}")
        checked += 1
    assert checked == len(key_map)

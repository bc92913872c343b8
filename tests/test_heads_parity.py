"""The SBERT objectives equal sentence-transformers' SoftmaxLoss, CosineSimilarityLoss and CoSENTLoss."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from minibert.multitask import MultiTaskModel

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
losses = pytest.importorskip("sentence_transformers.losses")

A = ["A man is playing a guitar.", "Two dogs run in a field.", "A woman slices an onion.", "The kids are asleep.",
     "Stocks fell sharply.", "A cat sits on the mat."]
B = ["Someone plays an instrument.", "Animals are outside.", "A man is cooking.", "The children are playing.",
     "Markets dropped today.", "A dog sleeps on a rug."]
NLI_LABELS = [0, 0, 2, 2, 1, 1]
SCORES = [4.2, 3.5, 0.8, 1.0, 4.6, 1.4]


def features(reference, texts):
    return reference.tokenize(texts)


@pytest.mark.parametrize("multiplication", [False, True], ids=["u,v,|u-v|", "u,v,|u-v|,u*v"])
def test_nli_head_equals_softmax_loss(minilm_dir, multiplication):
    ours = MultiTaskModel.from_encoder(minilm_dir, [{"name": "nli", "type": "nli",
                                                     "concat_multiplication": multiplication}])
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").eval()
    softmax_loss = losses.SoftmaxLoss(reference, 384, num_labels=3, concatenation_sent_multiplication=multiplication)
    with torch.no_grad():  # the same classifier weights in both
        softmax_loss.classifier.weight.copy_(ours.heads["nli"].classifier.weight)
        softmax_loss.classifier.bias.copy_(ours.heads["nli"].classifier.bias)
    labels = torch.tensor(NLI_LABELS)
    out = ours("nli", {"a": A, "b": B, "labels": labels})
    _, ref_logits = softmax_loss([features(reference, A), features(reference, B)], None)
    ref_loss = softmax_loss([features(reference, A), features(reference, B)], labels)
    assert_close(out.logits, ref_logits, atol=1e-5, rtol=0)
    assert_close(out.loss, ref_loss, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss,reference_loss", [("cosine_mse", "CosineSimilarityLoss"), ("cosent", "CoSENTLoss")])
def test_sts_losses_equal_sentence_transformers(minilm_dir, loss, reference_loss):
    ours = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts", "loss": loss}])
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").eval()
    ref_loss_fn = getattr(losses, reference_loss)(reference)
    out = ours("sts", {"a": A, "b": B, "scores": SCORES})
    ref = ref_loss_fn([features(reference, A), features(reference, B)], torch.tensor(SCORES) / 5.0)
    assert_close(out.loss, ref, atol=1e-6, rtol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(torch.tensor(reference.encode(A)), torch.tensor(reference.encode(B)))
    assert_close(out.logits, cosine, atol=1e-6, rtol=0)


def test_losses_have_gradients_for_the_encoder(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts"}, {"name": "nli", "type": "nli"}])
    model.train()
    sts = model("sts", {"a": A, "b": B, "scores": SCORES}).loss
    nli = model("nli", {"a": A, "b": B, "labels": NLI_LABELS}).loss
    (sts + nli).backward()
    assert model.encoder.bert.blocks[0].ffn_in.weight.grad.abs().sum() > 0
    assert model.heads["nli"].classifier.weight.grad.abs().sum() > 0
    assert model.encoder.bert.pooler.dense.weight.grad is None  # never used, never trained

"""The task types against sentence-transformers: the NLI, STS and cross-encoder objectives equal
SoftmaxLoss, CosineSimilarityLoss, CoSENTLoss, and a saved cross-encoder scores as its CrossEncoder does."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from minibert.data import PairExample
from minibert.multitask import MultiTaskModel
from minibert.predict import predict_pairs
from minibert.tasks.cross_sts import save_cross_encoder

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


def pairs(labels) -> list[PairExample]:
    return [PairExample(a, b, y) for a, b, y in zip(A, B, labels, strict=True)]


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
    out = ours("nli", ours.collate("nli", pairs(NLI_LABELS)))
    _, ref_logits = softmax_loss([features(reference, A), features(reference, B)], None)
    ref_loss = softmax_loss([features(reference, A), features(reference, B)], labels)
    assert_close(out.logits, ref_logits, atol=1e-5, rtol=0)
    assert_close(out.loss, ref_loss, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss,reference_loss", [("cosine_mse", "CosineSimilarityLoss"), ("cosent", "CoSENTLoss")])
def test_sts_losses_equal_sentence_transformers(minilm_dir, loss, reference_loss):
    ours = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts", "loss": loss}])
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").eval()
    ref_loss_fn = getattr(losses, reference_loss)(reference)
    out = ours("sts", ours.collate("sts", pairs(SCORES)))
    ref = ref_loss_fn([features(reference, A), features(reference, B)], torch.tensor(SCORES) / 5.0)
    # CoSENT multiplies the cosines by 20 before its logsumexp: their float rounding (1e-7) grows to a few 1e-6
    assert_close(out.loss, ref, atol=1e-5 if loss == "cosent" else 1e-6, rtol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(torch.tensor(reference.encode(A)), torch.tensor(reference.encode(B)))
    assert_close(out.logits, cosine, atol=1e-6, rtol=0)


def test_losses_have_gradients_for_the_encoder(minilm_dir):
    model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts"}, {"name": "nli", "type": "nli"}])
    model.train()
    sts = model("sts", model.collate("sts", pairs(SCORES))).loss
    nli = model("nli", model.collate("nli", pairs(NLI_LABELS))).loss
    (sts + nli).backward()
    assert model.encoder.bert.blocks[0].ffn_in.weight.grad.abs().sum() > 0
    assert model.heads["nli"].classifier.weight.grad.abs().sum() > 0
    assert model.encoder.bert.pooler.dense.weight.grad is None  # never used, never trained


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_cross_encoder_scores_as_sentence_transformers_cross_encoder(minilm_dir, tmp_path, path):
    """Our cross_sts model saved as a BertForSequenceClassification folder: sentence-transformers'
    CrossEncoder loads it and gives the same scores (sigmoid of the one logit), and its model's logits
    and BCE loss equal ours. On the fast path too, which holds Q, K and V fused (what a training run
    on it has in memory)."""
    ours = MultiTaskModel.from_encoder(minilm_dir, [{"name": "cross", "type": "cross_sts"}], seed=3, path=path)
    with torch.no_grad():  # a trained-looking head, not the initial one
        ours.heads["cross"].out.weight.normal_(0, 0.5)
    save_cross_encoder(ours, "cross", tmp_path / "ce")
    reference = st.CrossEncoder(str(tmp_path / "ce"), device="cpu")
    expected = torch.as_tensor(reference.predict(list(zip(A, B, strict=True)), batch_size=len(A)))
    scores = torch.tensor([row["cross"]["score"] for row in predict_pairs(ours, A, B)])
    assert_close(scores / 5, expected.float(), atol=1e-5, rtol=0)
    inputs = reference.tokenizer(A, B, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref_logits = reference.model(**inputs).logits.squeeze(-1)
    out = ours("cross", ours.collate("cross", pairs(SCORES)))
    assert_close(out.logits, ref_logits, atol=1e-5, rtol=0)
    bce = torch.nn.BCEWithLogitsLoss()(ref_logits, torch.tensor(SCORES) / 5)  # CrossEncoder's default loss
    assert_close(out.loss, bce, atol=1e-6, rtol=0)
    assert expected.std() > 0.01  # the scores differ from pair to pair: the head's weights reached the reference


@pytest.mark.parametrize("with_negatives", [False, True], ids=["pairs", "triplets"])
def test_pairs_loss_equals_multiple_negatives_ranking_loss(minilm_dir, with_negatives):
    from minibert.data import RetrievalPair

    ours = MultiTaskModel.from_encoder(minilm_dir, [{"name": "pairs", "type": "pairs"}])
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").eval()
    negatives = list(reversed(A)) if with_negatives else [None] * len(A)  # no candidate repeats a positive
    examples = [RetrievalPair(a, b, n) for a, b, n in zip(A, B, negatives, strict=True)]
    texts = [A, B] + ([negatives] if with_negatives else [])
    expected = losses.MultipleNegativesRankingLoss(reference)([features(reference, t) for t in texts], None)
    out = ours("pairs", ours.collate("pairs", examples))
    assert_close(out.loss, expected, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_triplet_loss_and_gradients_equal_triplet_loss(minilm_dir, path):
    """The SBERT paper's triplet objective: max(|a - p| - |a - n| + 5, 0), Euclidean. The same loss as
    sentence-transformers' TripletLoss, and the same gradient for every encoder weight (dropout off in both)."""
    from minibert.data import RetrievalPair

    ours = MultiTaskModel.from_encoder(minilm_dir, [{"name": "triplets", "type": "pairs", "loss": "triplet"}],
                                       path=path)
    reference = st.SentenceTransformer(str(minilm_dir), device="cpu").eval()
    negatives = list(reversed(A))
    examples = [RetrievalPair(a, b, n) for a, b, n in zip(A, B, negatives, strict=True)]
    expected = losses.TripletLoss(reference)([features(reference, t) for t in (A, B, negatives)], None)
    out = ours("triplets", ours.collate("triplets", examples))
    assert_close(out.loss, expected, atol=1e-5, rtol=1e-6)
    assert out.loss > 0  # unit vectors: every distance is at most 2, so the margin of 5 is never met
    out.loss.backward()
    expected.backward()
    theirs = dict(reference[0].auto_model.named_parameters())
    for key, grad in hf_tensors_of_grads(ours.encoder.bert).items():
        assert_close(grad, theirs[key].grad, atol=1e-6, rtol=1e-4, msg=key)
    with pytest.raises(ValueError, match="the triplet loss needs a negative for every anchor"):
        ours.task("triplets").loss_terms(ours.collate("triplets", [RetrievalPair(A[0], B[0])]))


def hf_tensors_of_grads(bert) -> dict:
    """Each encoder parameter's gradient under its Hugging Face name (a fused QKV's split in three)."""
    from minibert.weights import split_qkv

    grads = split_qkv({n: p.grad for n, p in bert.named_parameters() if p.grad is not None})
    key_map = bert.key_map(bert.config, bert.pooler is not None)
    return {key_map[name]: g for name, g in grads.items()}

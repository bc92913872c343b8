# %% [markdown]
# # minibert, step by step: from a sentence to its embedding, to a multi-task model, to a training run
#
# Each step computes something by hand from the loaded weights, then checks it against minibert's own
# module and against the reference libraries (`transformers`, `sentence-transformers`) with an
# assertion: a broken step stops the notebook. It runs on a laptop CPU in about a minute.
#
# To run it elsewhere, from a clone of the repository:
#
#     make install weights        # a venv with minibert and its test tools, and all-MiniLM-L6-v2
#     make notebook               # runs this notebook top to bottom and keeps the outputs
#
# (`docs/walkthrough.py` is the source; `docs/walkthrough.ipynb` is made from it by
# `scripts/notebook.py`.)

# %%
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.testing import assert_close

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the references read the same local folder, never a hub
os.environ["TQDM_DISABLE"] = "1"  # no progress bars in the outputs
warnings.filterwarnings("ignore", message="IProgress not found")
import sentence_transformers  # noqa: E402  (the references, to check against)
import transformers  # noqa: E402

transformers.utils.logging.disable_progress_bar()

from minibert import SentenceEncoder, resolve_model  # noqa: E402

# The repository's root, wherever Jupyter started the kernel (the repository, or docs/)
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").is_file())
torch.manual_seed(0)
folder = resolve_model("all-MiniLM-L6-v2")
encoder = SentenceEncoder.from_pretrained(folder, path="reference")  # model.py as written
hf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
hf_model = transformers.BertModel.from_pretrained(str(folder), attn_implementation="eager").eval()
config = encoder.bert.config
print(f"{folder.name}: {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
      f"{config.hidden_size} dims, {encoder.bert.num_parameters() / 1e6:.1f}M parameters")

# %% [markdown]
# ## 1. Tokens
#
# BERT reads word pieces: a word its vocabulary lacks is cut into pieces, the later ones marked `##`.
# `[CLS]` opens every input and `[SEP]` closes it. A batch is padded to its longest input; the attention
# mask says which positions are real (1) and which are padding (0).

# %%
sentence = "Tokenization splits unbelievably long words."
encoding = encoder.tokenizer.encode([sentence])[0]
print(list(zip(encoding.tokens, encoding.ids, strict=True)))
assert encoding.ids == hf_tokenizer(sentence)["input_ids"]  # the same ids as transformers' tokenizer

sentences = ["A man is playing a guitar.", "Someone plays music.", "The stock market fell sharply today."]
batch = encoder.tokenizer(sentences)
print(batch.input_ids)
print(batch.attention_mask)
assert batch.input_ids.tolist() == hf_tokenizer(sentences, padding=True)["input_ids"]

# %% [markdown]
# ## 2. Embeddings
#
# A token's first vector is the sum of three learnt rows: its word, its position (0, 1, 2, ...) and its
# segment (token type 0 for a single sentence), then LayerNorm.

# %%
E = encoder.bert.embeddings
ids, types = batch.input_ids, batch.token_type_ids
L = ids.shape[1]
by_hand = E.word.weight[ids] + E.position.weight[:L][None] + E.token_type.weight[types]
by_hand = F.layer_norm(by_hand, (config.hidden_size,), E.norm.weight, E.norm.bias, config.layer_norm_eps)
with torch.no_grad():
    assert_close(by_hand, E(ids, types), atol=1e-6, rtol=0)  # minibert's Embeddings
    assert_close(by_hand, hf_model.embeddings(input_ids=ids, token_type_ids=types), atol=1e-6, rtol=0)
print("embeddings:", tuple(by_hand.shape), "= (batch, tokens, dims)")

# %% [markdown]
# ## 3. Attention, one head by hand, then all of them
#
# Each head projects every token to a query q, a key k and a value v (d = 384 / 12 = 32 numbers each in
# MiniLM). Token i looks at token j with weight softmax over j of q_i·k_j / √d. Without
# the √d, scores grow with d, the softmax saturates and its gradients vanish. A padded key must get no
# weight at all: the mask replaces its score by the most negative float, so its exp() is exactly 0.

# %%
block = encoder.bert.blocks[0]
att = block.attention
x = by_hand.detach()
H, D = config.num_attention_heads, config.head_dim


def heads(t):  # (B, L, H*D) -> (B, H, L, D)
    return t.view(t.shape[0], t.shape[1], H, D).transpose(1, 2)


with torch.no_grad():
    q, k, v = heads(att.query(x)), heads(att.key(x)), heads(att.value(x))
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, L, L)
    pad = batch.attention_mask[:, None, None, :] == 0  # (B, 1, 1, L): padded keys
    scores = scores.masked_fill(pad, torch.finfo(scores.dtype).min)
    row = scores[1, 0, 0].tolist()  # sentence 1 (padded), head 0, its first query: one score per key
    print("scores of sentence 1's first query:", " ".join(f"{s:.2f}" if s > -1e30 else f"{s:.1e}" for s in row))
    probs = scores.softmax(dim=-1)
    assert (probs[pad.expand_as(probs)] == 0).all()  # not a trace of attention on padding
    one_head = probs[0, 0] @ v[0, 0]  # sentence 0, head 0: (L, D)
    all_heads = (probs @ v).transpose(1, 2).reshape(x.shape)  # heads side by side again
    assert_close(all_heads[0, :, :D], one_head)
    for implementation in ("eager", "sdpa"):  # by hand, and the fused scaled_dot_product_attention kernel
        att.attn_implementation = implementation
        out = att(x, batch.attention_mask)
        real = batch.attention_mask.bool()
        assert_close(out[real], all_heads[real], atol=1e-5, rtol=0)
    att.attn_implementation = "sdpa"

tokens = encoder.tokenizer.encode([sentences[0]])[0].tokens
n = len(tokens)
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.imshow(probs[0, 3, :n, :n], cmap="Blues")
ax.set_xticks(range(n), tokens, rotation=90)
ax.set_yticks(range(n), tokens)
ax.set_title("layer 1, head 4: who attends to whom")
ax.set_xlabel("key")
ax.set_ylabel("query")
plt.show()

# %% [markdown]
# ## 4. A block, then the whole encoder
#
# BERT is **post-LN**: each sub-layer's output is added to its input and *then* normalised,
# `x = LN(x + Attention(x))`, then `x = LN(x + W2 GELU(W1 x))`. (GPT-2 normalises the sub-layer's input
# instead; the checkpoint was trained one way, and only that way gives its numbers.)

# %%
with torch.no_grad():
    h = block.attention_norm(x + block.attention_out(all_heads))  # add, then normalise
    h = block.ffn_norm(h + block.ffn_out(F.gelu(block.ffn_in(h))))
    assert_close(h[real], block(x, batch.attention_mask)[real], atol=1e-5, rtol=0)

    ours = encoder.bert(ids, batch.attention_mask, types, output_hidden_states=True).hidden_states
    theirs = hf_model(input_ids=ids, attention_mask=batch.attention_mask, token_type_ids=types,
                      output_hidden_states=True).hidden_states
for layer, (a, b) in enumerate(zip(ours, theirs, strict=True)):
    diff = (a[real] - b[real]).abs().max().item()
    print(f"{'embeddings' if layer == 0 else f'after block {layer}':16} max |minibert - transformers| = {diff:.1e}")
    assert diff < 1e-5

# %% [markdown]
# ## 5. How BERT learned: masked-language modelling
#
# BERT was pretrained by hiding words and predicting them from both sides. Of a sentence's real tokens
# (never `[CLS]`, `[SEP]` or padding) 15% are chosen; a chosen token becomes `[MASK]` 80% of the time, a
# random token 10%, and stays itself 10%, and the model must give the original token at every chosen
# position (`minibert/masking.py`). The masked-language-model head turns a position's final state into a
# score for each of the 30,522 vocabulary tokens: dense, GELU, LayerNorm, then the dot product with every
# *input* word embedding (the output layer is tied to them) plus a bias (`minibert/mlm.py`). all-MiniLM-L6-v2
# was saved without its head, so here it gets a fresh one; transformers' `BertForMaskedLM` loads what
# minibert saves and computes the same scores.

# %%
import tempfile  # noqa: E402

from minibert.masking import IGNORE_INDEX, mask_tokens  # noqa: E402
from minibert.mlm import MaskedLanguageModel, MaskedLMHead  # noqa: E402

tokenizer = encoder.tokenizer
text = "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun."
batch_mlm = tokenizer([text] * 200)  # the same sentence 200 times: the rule's rates show
maskable = batch_mlm.attention_mask.bool() & ~torch.isin(batch_mlm.input_ids, torch.tensor(sorted(
    tokenizer.special_ids)))
mask_id = tokenizer.backend.token_to_id("[MASK]")
every_id = torch.arange(tokenizer.vocab_size)  # a random replacement: any token of the vocabulary, as BERT drew it
masked, labels = mask_tokens(batch_mlm.input_ids, maskable, mask_id, every_id, torch.Generator().manual_seed(0))
chosen = labels != IGNORE_INDEX
print("one masked copy:", " ".join(tokenizer.backend.id_to_token(i) for i in masked[0].tolist()))
masked_share = (masked[chosen] == mask_id).float().mean()
kept_share = (masked[chosen] == labels[chosen]).float().mean()
print(f"chosen {chosen.sum() / maskable.sum():.3f} of the real tokens; of those [MASK] {masked_share:.2f}, "
      f"unchanged {kept_share:.2f}")
assert not chosen[~maskable].any()  # never a special token or padding

torch.manual_seed(0)
mlm = MaskedLanguageModel(encoder.bert, MaskedLMHead(config), tokenizer).eval()
with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
    mlm.save_pretrained(tmp)  # the *ForMaskedLM layout: encoder under "bert.", head under "cls.predictions."
    hf_mlm = transformers.AutoModelForMaskedLM.from_pretrained(tmp, attn_implementation="eager").eval()
    ids, attention = masked[:2], batch_mlm.attention_mask[:2]
    ours_mlm = mlm(ids, attention, labels=labels[:2])
    theirs_mlm = hf_mlm(input_ids=ids, attention_mask=attention, labels=labels[:2])
    assert_close(ours_mlm.logits, theirs_mlm.logits, atol=1e-4, rtol=1e-5)
    assert_close(ours_mlm.loss, theirs_mlm.loss, atol=1e-5, rtol=1e-5)
print(f"an untrained head: loss {ours_mlm.loss:.2f} (ln 30522 = {math.log(tokenizer.vocab_size):.2f}), "
      "the same as transformers'")

# %% [markdown]
# ## 6. Pooling and similarity
#
# A sentence's vector is the mean of its real tokens' final states (padding left out by the mask), then
# L2-normalised: the cosine of two sentences is then their dot product.

# %%
with torch.no_grad():
    last = ours[-1]
    mask = batch.attention_mask[..., None].float()
    mean = (last * mask).sum(1) / mask.sum(1)
    embeddings = F.normalize(mean, dim=-1)
assert_close(embeddings, encoder.encode(sentences, convert_to="torch"), atol=1e-6, rtol=0)
st_model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
assert_close(embeddings, st_model.encode(sentences, convert_to_tensor=True), atol=1e-5, rtol=0)

more = sentences + ["A chef is cooking pasta.", "Markets dropped after the report.", "A woman plays the violin."]
similarity = encoder.encode(more) @ encoder.encode(more).T
fig, ax = plt.subplots(figsize=(5, 4))
ax.imshow(similarity, cmap="viridis", vmin=-0.1, vmax=1)
ax.set_xticks(range(len(more)), range(len(more)))
ax.set_yticks(range(len(more)), [f"[{i}] {s}" for i, s in enumerate(more)], fontsize=8)
for i in range(len(more)):
    for j in range(len(more)):
        ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="k" if similarity[i, j] > 0.5 else "w")  # dark on the bright cells
ax.set_title("cosine similarity")
plt.show()

# %% [markdown]
# ## 7. Multi-task heads on one encoder
#
# One encoder, several small heads; each task type knows how to batch its examples, what its head
# reads and which loss it trains:
#
# - `classification` (topic): a linear layer on the sentence embedding u;
# - `token_classification` (NER): a linear layer on every token's state. A word cut into several pieces is
#   tagged on its first piece; the later pieces, `[CLS]` and `[SEP]` get the label -100, which the loss
#   skips, so there is one prediction per word;
# - `nli`: a linear layer on (u, v, |u − v|) of premise and hypothesis, each embedded on its own (SBERT);
# - `sts`: no weights at all, cos(u, v) trained towards the gold score.

# %%
from minibert.data import PairExample, TaggedSentence, TextExample  # noqa: E402
from minibert.multitask import MultiTaskModel  # noqa: E402

tasks = [{"name": "topic", "type": "classification", "labels": ["World", "Sports", "Business", "Sci/Tech"]},
         {"name": "ner", "type": "token_classification", "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]},
         {"name": "nli", "type": "nli"}, {"name": "sts", "type": "sts"}]
model = MultiTaskModel.from_encoder(folder, tasks, seed=0, path="reference")
examples = {"topic": [TextExample("Stocks rallied as markets rose.", "Business")],
            "ner": [TaggedSentence(["Angela", "Merkel", "visited", "Paris"], ["B-PER", "I-PER", "O", "B-LOC"])],
            "nli": [PairExample("A man plays a guitar.", "A person makes music.", "entailment")],
            "sts": [PairExample("A man plays a guitar.", "Someone plays music.", 4.2)]}
for name, exs in examples.items():
    out = model(name, model.collate(name, exs))
    print(f"{name:6} {type(model.heads[name]).__name__:26} logits {tuple(out.logits.shape)!s:12} loss {out.loss:.3f}")
    if name in ("topic", "ner", "nli"):  # fresh heads guess evenly: the cross-entropy is about ln(classes)
        assert abs(out.loss.item() - math.log(out.logits.shape[-1])) < 0.15, name
ner_batch = model.collate("ner", examples["ner"])
print("NER tokens:", encoder.tokenizer.encode([examples["ner"][0].words], is_pretokenized=True)[0].tokens)
print("NER labels:", ner_batch["labels"][0].tolist(), "(-100: not scored)")
assert (ner_batch["labels"] != -100).sum() == len(examples["ner"][0].words)  # one scored label per word
with torch.no_grad():  # the NLI head by hand: its classifier on (u, v, |u - v|)
    batch_nli = model.collate("nli", examples["nli"])
    u, v = model.encoder.features(batch_nli["input_ids"], batch_nli["attention_mask"]).embedding.chunk(2)
    logits = model.heads["nli"].classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
    assert_close(logits, model("nli", batch_nli).logits)
    cosine = model("sts", model.collate("sts", examples["sts"])).logits  # STS: the cosine is the prediction
    u, v = model.encoder.encode(["A man plays a guitar.", "Someone plays music."], convert_to="torch")
    assert_close(cosine, (u @ v)[None], atol=1e-6, rtol=0)  # unit vectors: the cosine is the dot product

fig, ax = plt.subplots(figsize=(9, 2.8))
ax.axis("off")
ax.set_xlim(0, 1)
ax.set_ylim(-0.15, 1.05)
nodes = {"sentence": (0.05, 0.5), "encoder": (0.25, 0.5), "token states": (0.48, 0.85), "pooling: u": (0.48, 0.3),
         "ner: a tag per token": (0.82, 0.85), "topic: linear(u)": (0.82, 0.55),
         "nli: linear(u, v, |u-v|)": (0.82, 0.25), "sts: cos(u, v)": (0.82, -0.05)}
for text, (bx, by) in nodes.items():
    ax.text(bx, by, text, ha="center", va="center", bbox=dict(boxstyle="round", fc="#e8f0fe"), fontsize=9)
edges = [("sentence", "encoder"), ("encoder", "token states"), ("encoder", "pooling: u"),
         ("token states", "ner: a tag per token"), ("pooling: u", "topic: linear(u)"),
         ("pooling: u", "nli: linear(u, v, |u-v|)"), ("pooling: u", "sts: cos(u, v)")]
for a, b in edges:
    (xa, ya), (xb, yb) = nodes[a], nodes[b]
    ax.annotate("", xy=(xb - 0.11, yb), xytext=(xa + 0.06, ya), arrowprops=dict(arrowstyle="->"))
ax.set_title("what reads what")
plt.show()

# %% [markdown]
# **The SBERT paper's three objectives, in the code.** Reimers & Gurevych (2019) trained SBERT three ways,
# each a task type here:
#
# | objective | task type | loss | file |
# |---|---|---|---|
# | classification | `nli` | cross-entropy of linear(u, v, \|u − v\|) | `minibert/tasks/nli.py` |
# | regression | `sts`, `loss = "cosine_mse"` | (cos(u, v) − gold)² | `minibert/tasks/sts.py` |
# | triplet | `pairs`, `loss = "triplet"` | max(\|a − p\| − \|a − n\| + 5, 0), Euclidean | `minibert/tasks/pairs.py` |
#
# What came later: the multiple-negatives ranking loss (`pairs`' default: the other anchors' positives are
# the negatives) and CoSENT (`sts`, `loss = "cosent"`: only the order of the cosines counts). The paper's u and
# v were mean-pooled; all-MiniLM-L6-v2 normalises its embeddings, so every distance here is at most 2 and the
# triplet margin ε of 5 (sentence-transformers' default; the paper's was 1) is never met.

# %%
from minibert.data import RetrievalPair  # noqa: E402

triplets = MultiTaskModel.from_encoder(folder, [{"name": "triplets", "type": "pairs", "loss": "triplet"}],
                                       path="reference")
anchor, positive, negative = "A man plays a guitar.", "Someone plays music.", "A chef cooks pasta."
with torch.no_grad():
    out = triplets("triplets", triplets.collate("triplets", [RetrievalPair(anchor, positive, negative)]))
    a, p, n = encoder.encode([anchor, positive, negative], convert_to="torch")
    # (TripletLoss's distance adds 1e-6 to every difference, so that |a - p| has a gradient where a = p)
    by_hand = torch.clamp((a - p + 1e-6).norm() - (a - n + 1e-6).norm() + 5.0, min=0)
assert_close(out.loss, by_hand, atol=1e-5, rtol=0)
print(f"|a - p| = {(a - p).norm():.3f}, |a - n| = {(a - n).norm():.3f}: triplet loss {out.loss:.3f}")

# %% [markdown]
# ## 8. Training
#
# First one step written out: an NLI batch collated (the premises, then the hypotheses), the encoder, the
# head, the cross-entropy, the gradients and AdamW's update: what `Trainer.train_step` does at every step
# (`minibert/train/step.py`), there with loss weights, accumulation, clipping and a learning-rate schedule.

# %%
step_model = MultiTaskModel.from_encoder(folder, [{"name": "nli", "type": "nli"}], seed=0, path="reference")
step_model.train()
step_model.encoder.bert.set_dropout(0.0)  # dropout off: the step by hand and the model's see the same numbers
pairs_nli = [PairExample("A man plays a guitar.", "A person makes music.", "entailment"),
             PairExample("A dog runs in a field.", "The dog is asleep.", "contradiction")]
batch_step = step_model.collate("nli", pairs_nli)  # (4, L): two premises, then two hypotheses
u, v = step_model.encoder.features(batch_step["input_ids"], batch_step["attention_mask"]).embedding.chunk(2)
logits = step_model.heads["nli"].classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
loss = F.cross_entropy(logits, batch_step["labels"])
assert_close(loss, step_model("nli", batch_step).loss)  # what MultiTaskModel.forward computes
loss.backward()
optimizer = torch.optim.AdamW(step_model.parameters(), lr=1e-3, weight_decay=0.01)
W = step_model.heads["nli"].classifier.weight
before, grad = W.detach().clone(), W.grad.clone()
optimizer.step()
# Adam's first step: its moments are the gradient and its square, so each weight moves by lr * g / (|g| + eps),
# lr against the gradient's sign; AdamW also shrinks every weight by lr * weight_decay of itself.
assert_close(W.detach(), before * (1 - 1e-3 * 0.01) - 1e-3 * grad / (grad.abs() + 1e-8), atol=1e-7, rtol=0)
print(f"loss {loss:.3f}; the classifier's weights moved by at most {(W.detach() - before).abs().max():.1e}")

# %% [markdown]
# Now the real training script on synthetic data it makes itself (`make train-quick`'s), shortened to 60
# steps: every task type, round-robin task sampling, dev evaluation, checkpoints. Then what the
# optimizer sees: layer-wise learning rates (each layer below the top gets `layer_decay` times the one
# above), freezing, and how often each task is drawn.

# %%
run = ROOT / "runs" / "walkthrough"
subprocess.run([sys.executable, "scripts/make_quick_data.py", "runs/quick-data"], check=True, cwd=ROOT)
result = subprocess.run([sys.executable, "scripts/train.py", "--config", "scripts/configs/quick.toml",
                         "--set", "steps=60", "--set", f"output_dir={run}", "--set", "eval.every=60",
                         "--set", "output.log_every=5", "--set", "output.plot=false"],
                        cwd=ROOT, capture_output=True, text=True)
assert result.returncode == 0, result.stderr  # a failed run shows its own error here
print(next(line for line in reversed(result.stderr.splitlines()) if " dev " in line)[:160], "...")
log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
losses = [r for r in log if "loss" in r]
dev = [r for r in log if "dev" in r]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
for task in sorted({t for r in losses for t in r["loss"]}):
    steps = [r["step"] for r in losses if task in r["loss"]]
    left.plot(steps, [r["loss"][task] for r in losses if task in r["loss"]], label=task)
left.set_xlabel("step")
left.set_title("training loss")
left.legend(fontsize=7)
right.plot([r["step"] for r in dev], [r["dev"]["mean"] for r in dev], marker="o")
right.set_xlabel("step")
right.set_title("mean dev score")
plt.show()
trained = sorted({t for r in losses for t in r["loss"]})
first = sum(next(r["loss"][t] for r in losses if t in r["loss"]) for t in trained)  # each task's first log
last = sum(next(r["loss"][t] for r in reversed(losses) if t in r["loss"]) for t in trained)  # and its last
print(f"the {len(trained)} tasks' losses summed: {first:.2f} at their first logs, {last:.2f} at their last")
assert losses[-1]["step"] == 60 and len(trained) == 8 and last < 0.8 * first

# %%
from minibert.train.batches import task_probabilities  # noqa: E402
from minibert.train.optim import freeze, param_groups, trainable_report  # noqa: E402

groups = param_groups(model, lr=1e-4, layer_decay=0.9, head_lr=1e-3)
for g in groups:
    if g["name"].endswith("/decay"):
        print(f"{g['name']:24} lr {g['lr']:.2e}  weight decay {g['weight_decay']}")
top = [g["lr"] for g in groups if g["name"] == "layer.5/decay"][0]
assert math.isclose([g["lr"] for g in groups if g["name"] == "layer.4/decay"][0], 0.9 * top)
freeze(model, "embeddings", "layers:2")  # the embeddings and the two lowest blocks stop moving
print(trainable_report(model))
blocks = model.encoder.bert.blocks
assert not blocks[1].ffn_in.weight.requires_grad and blocks[2].ffn_in.weight.requires_grad

# How often each task is drawn, for the sizes of the five training sets of `scripts/configs/multitask.toml`
# (STS-B, SNLI (its dev split: no train split offline), SST-2, AG News, CoNLL-2003): proportional to size,
# flattened by a temperature (p ~ size^(1/T)), or one task after another.
sizes = [5749, 8857, 60614, 9000, 14041]
for sampling, temperature in (("proportional", 1.0), ("temperature", 2.0), ("round_robin", 1.0)):
    p = task_probabilities(sizes, sampling, temperature)
    print(f"{sampling:12} T={temperature:g}: " + "  ".join(f"{x:.2f}" for x in p))

# %% [markdown]
# ## 9. Pretraining a tiny BERT from nothing
#
# A 2-layer, 64-wide BERT with MiniLM's tokenizer and random weights learns from masked-language modelling
# alone, on the synthetic data's plain text (sentences from the templates of `make train-quick`), for 300
# steps of the same training script. `make pretrain-tiny` does this at a larger scale on the sentences of
# the real training sets. The baseline to beat: every masked token predicted by its frequency in the text.

# %%
import shutil  # noqa: E402
from collections import Counter  # noqa: E402

from minibert import BertConfig, BertModel  # noqa: E402
from minibert.train import load_config  # noqa: E402
from minibert.train.batches import load_task_data  # noqa: E402
from minibert.weights import save_pretrained  # noqa: E402

tiny = ROOT / "runs" / "walkthrough-tiny-bert"
torch.manual_seed(0)
tiny_config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                         max_position_embeddings=64)
save_pretrained(BertModel(tiny_config, add_pooler=False), tiny)
for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(folder / name, tiny / name)
run_mlm = ROOT / "runs" / "walkthrough-pretrain"
overrides = [f"model={tiny}", "data_dir=runs/quick-data", "tasks.mlm.train=text/train.txt", "tasks.mlm.dev_split=0.1",
             "steps=300", "batch_size=16", f"output_dir={run_mlm}", "eval.every=300", "output.log_every=10",
             "output.plot=false", "optim.lr=3e-3", "optim.head_lr=3e-3"]
result = subprocess.run([sys.executable, "scripts/train.py", "--config", "scripts/configs/pretrain_tiny.toml",
                         *[arg for o in overrides for arg in ("--set", o)]], cwd=ROOT, capture_output=True, text=True)
assert result.returncode == 0, result.stderr
log = [json.loads(line) for line in (run_mlm / "metrics.jsonl").read_text().splitlines()]
dev = [r["dev"]["mlm"] for r in log if "dev" in r][-1]

# the baseline: each token's frequency in the training text, scored on the held-out text
cfg = load_config(run_mlm / "config.json")
train_text, dev_text, _ = load_task_data(cfg, cfg.tasks[0], 0)
specials = tokenizer.special_ids
counts = [Counter(i for e in tokenizer.encode([x.text for x in part]) for i in e.ids if i not in specials)
          for part in (train_text, dev_text)]
total = sum(counts[0].values())
baseline = -sum(n * math.log((counts[0][t] + 1) / (total + tokenizer.vocab_size)) for t, n in counts[1].items()) \
    / sum(counts[1].values())
print(f"held-out masked tokens: loss {dev['loss']:.2f}, accuracy {dev['accuracy']:.2f}; "
      f"predicting each by its frequency: loss {baseline:.2f}")
assert dev["loss"] < baseline  # the context is worth more than the frequencies

pretrained = MultiTaskModel.load(run_mlm / "final").masked_lm()
questions = ["A [MASK] is chasing a mouse.", "Shares of Toyota [MASK] after strong profits."]
for question, masks in zip(questions, pretrained.fill_mask(questions, top_k=3), strict=True):
    print(f"{question}  ->  " + ", ".join(f"{t['token_str']} {t['score']:.2f}" for t in masks[0]))
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot([r["step"] for r in log if "loss" in r], [r["loss"]["mlm"] for r in log if "loss" in r], label="training")
ax.axhline(baseline, color="grey", linestyle="--", label="token frequencies (held out)")
ax.scatter([300], [dev["loss"]], color="C1", label="held out", zorder=3)
ax.set_xlabel("step")
ax.set_ylabel("masked-token loss")
ax.legend(fontsize=8)
ax.set_title("a tiny BERT learns from nothing")
plt.show()

# %% [markdown]
# ## 10. What the measurements say
#
# Three of the design questions of `docs/design-questions.md`, read from its tables.


# %%
def table(title: str) -> tuple[list[str], list[list[str]]]:
    """The first markdown table after the heading `title` in docs/design-questions.md: header, rows."""
    text = (ROOT / "docs" / "design-questions.md").read_text().split(f"## {title}", 1)[1]
    lines = [line for line in text.splitlines() if line.startswith("|")]
    end = next((i for i in range(2, len(lines)) if lines[i].startswith("|---")), len(lines)) - 1
    rows = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in lines[:end]]
    return rows[0], rows[2:]


def number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
header, rows = table("One multi-task model, or one model per task?")
x = np.arange(len(rows))
axes[0].bar(x - 0.2, [number(r[3]) for r in rows], 0.4, label="one multi-task model")
axes[0].bar(x + 0.2, [number(r[4]) for r in rows], 0.4, label="each task alone")
axes[0].set_xticks(x, [r[0] for r in rows], fontsize=8)
axes[0].set_ylim(0.7, 0.95)
axes[0].legend(fontsize=7)
axes[0].set_title("one model for five tasks costs ~1 point on three")

few = (ROOT / "docs" / "design-questions.md").read_text().split("| task (dev) | full fine-tuning", 1)[1]
few_rows = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in few.splitlines()[2:7]]
for i, label in enumerate(["full fine-tuning", "bottom 3 layers frozen", "heads only"]):
    axes[1].bar(np.arange(5) + (i - 1) * 0.27, [number(r[i + 1]) for r in few_rows], 0.27, label=label)
axes[1].set_xticks(np.arange(5), [r[0].split()[0] for r in few_rows], fontsize=8)
axes[1].legend(fontsize=7, loc="lower left")
axes[1].set_title("300 examples: freezing costs NER most, STS nothing")

header, rows = table("Why layer-wise learning rates, and which?")
decays = [r for r in rows if r[0].startswith("decay")]
for j, task in enumerate(header[1:6], start=1):
    axes[2].plot([number(r[0].split()[1]) for r in decays], [number(r[j]) for r in decays], marker="o", label=task)
axes[2].invert_xaxis()
axes[2].set_xlabel("layer decay (1 = one rate for all layers)")
axes[2].legend(fontsize=7)
axes[2].set_title("decay trades NER for STS")
plt.tight_layout()
plt.show()

# %% [markdown]
# - **One model or five?** One encoder for five tasks costs a fifth of the parameters and latency, and
#   about a point on the tasks that read the shared embedding most directly (STS, NLI, topic).
# - **What to freeze?** The further a task is from what the encoder was pretrained for (NER reads token
#   states; STS reads the embedding it was trained on), the more freezing costs it.
# - **Layer-wise rates?** Decay (lower layers learning slower) moves STS up by less than a point and NER
#   down by several per step, and no decay has the best mean. What matters most is not in the plot: the
#   fresh heads need a rate of their own, far above the encoder's (at the encoder's, STS loses 5 points).

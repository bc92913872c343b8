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
# weight at all: the mask adds the most negative float to its score, so its exp() is exactly 0.

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
# ## 5. Pooling and similarity
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
# ## 6. Multi-task heads on one encoder
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
# ## 7. Training
#
# The real training script on synthetic data it makes itself (`make train-quick`'s), shortened to 60
# steps: every task type, round-robin task sampling, dev evaluation, checkpoints. Then what the
# optimizer sees: layer-wise learning rates (each layer below the top gets `layer_decay` times the one
# above), freezing, and how often each task is drawn.

# %%
run = ROOT / "runs" / "walkthrough"
subprocess.run([sys.executable, "scripts/make_quick_data.py", "runs/quick-data"], check=True, cwd=ROOT)
result = subprocess.run([sys.executable, "scripts/train.py", "--config", "scripts/configs/quick.toml",
                         "--set", "steps=60", "--set", f"output_dir={run}", "--set", "eval.every=20",
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
first, last = (np.mean([sum(r["loss"].values()) for r in part]) for part in (losses[:3], losses[-3:]))
print(f"summed task losses: {first:.2f} over the first three logs, {last:.2f} over the last three")
assert losses[-1]["step"] == 60 and last < 0.8 * first

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
# ## 8. What the measurements say
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

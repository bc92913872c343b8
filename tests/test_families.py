"""The families (DistilBERT, RoBERTa, XLM-RoBERTa, MPNet) against transformers and sentence-transformers.

No checkpoint of these families can be had offline, so each test model is a small random one that
transformers builds from its config and saves, with a real tokenizer of the family's kind built here
with the tokenizers library (WordPiece for DistilBERT and MPNet, byte-level BPE for RoBERTa,
SentencePiece-style Unigram for XLM-RoBERTa). minibert then loads the folder and must give the same
hidden states after every layer, the same gradients, and the same sentence-transformers pipeline output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from minibert import SentenceEncoder
from minibert.families import FAMILIES, load_model
from minibert.paths import convert
from minibert.paths import fast as fast_module
from minibert.weights import save_pretrained

transformers = pytest.importorskip("transformers", reason="transformers builds the reference models")
st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the pipeline reference")

CORPUS = ["A man is playing a guitar on the stage.", "Someone plays music for the crowd.", "Kids run in the park.",
          "The stock market fell sharply today after the report.", "Stocks rallied as markets rose again.",
          "Peter Blackburn visited Brussels on Monday.", "A chef is cooking pasta in the kitchen.",
          "caf\u00e9 na\u00efve \u4e2d\u6587 \U0001f600 <s> </s> [SEP]"]
SENTENCES = ["", "a", "A man is playing a guitar.", CORPUS[3], " ".join(CORPUS), "Kids run.", CORPUS[-1]]
FAMILY_NAMES = ["distilbert", "distilbert-sinusoidal", "roberta", "xlm-roberta", "mpnet"]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)


def roberta_specials(tok: Backend, cls: str = "<s>", sep: str = "</s>") -> processors.TemplateProcessing:
    ids = [(t, tok.token_to_id(t)) for t in (cls, sep)]
    return processors.TemplateProcessing(single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} {sep} $B {sep}",
                                         special_tokens=ids)


def family_tokenizer(name: str, minilm_dir: Path):
    """(a transformers fast tokenizer of the family's kind, its vocabulary size)."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's order: pad is 1
    if name.startswith("distilbert"):
        return transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    if name == "roberta":  # byte-level BPE, as RoBERTa's own
        tok = Backend(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        unk = "<unk>"
    elif name == "xlm-roberta":  # SentencePiece-style Unigram over Metaspace, as XLM-R's
        tok = Backend(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        tok.train_from_iterator(CORPUS * 3, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials,
                                                                    unk_token="<unk>"))
        tok.post_processor = roberta_specials(tok)
        unk = "<unk>"
    else:  # MPNet: WordPiece with <s>, </s>, <pad> = 1
        specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
        tok = Backend(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(CORPUS * 3, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
        tok.post_processor = roberta_specials(tok)
        unk = "[UNK]"
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token=unk, pad_token="<pad>", cls_token="<s>",
        sep_token="</s>", mask_token="<mask>", model_max_length=64)
    return fast


def hf_config(name: str, vocab_size: int):
    if name.startswith("distilbert"):
        return transformers.DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                             max_position_embeddings=64,
                                             sinusoidal_pos_embds=name.endswith("sinusoidal"))
    positions = dict(max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    if name == "mpnet":
        return transformers.MPNetConfig(vocab_size=vocab_size, relative_attention_num_buckets=32, **SMALL, **positions)
    cls = transformers.RobertaConfig if name == "roberta" else transformers.XLMRobertaConfig
    return cls(vocab_size=vocab_size, type_vocab_size=1, **SMALL, **positions)


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory, minilm_dir) -> dict[str, Path]:
    """name -> a folder saved by transformers: a random small model of the family and its tokenizer."""
    folders = {}
    for i, name in enumerate(FAMILY_NAMES):
        folder = tmp_path_factory.mktemp(name)
        tokenizer = family_tokenizer(name, minilm_dir)
        torch.manual_seed(i)
        model = transformers.AutoModel.from_config(hf_config(name, len(tokenizer)))
        with torch.no_grad():  # away from the initial ones and zeros, so that every tensor matters
            for n, p in model.named_parameters():
                if "sinusoidal" not in name or "position_embeddings" not in n:
                    p.add_(torch.randn_like(p) * 0.05)
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        folders[name] = folder
    return folders


def reference(folder: Path):
    return transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager").eval()


def batch_of(folder: Path, texts=SENTENCES):
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    return tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hidden_states_after_every_layer_match_transformers(family_dirs, family, attn, monkeypatch):
    folder = family_dirs[family]
    ours = load_model(folder, attn_implementation=attn)
    assert type(ours) is FAMILIES[family.removesuffix("-sinusoidal")]
    batch = batch_of(folder)
    real = batch["attention_mask"].bool()
    assert (~real).any() and real.sum(1).max() == 64  # padding, and a text cut at the limit
    with torch.no_grad():
        theirs = reference(folder)(**batch, output_hidden_states=True).hidden_states
        for path in ("reference", "fast", "fast, grid kept"):  # the last: padded rows run, as in encode's batches
            monkeypatch.setattr(fast_module, "PACK_ABOVE", 1.0 if path == "fast, grid kept" else 0.1)
            mine = convert(ours, path.split(",")[0])(batch["input_ids"], batch["attention_mask"],
                                                     output_hidden_states=True)
            assert len(mine.hidden_states) == len(theirs) == 3
            for layer, (a, b) in enumerate(zip(mine.hidden_states, theirs, strict=True)):
                torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0, msg=f"{path}, layer {layer}")
                assert path == "reference" or a[~real].abs().max() == 0  # the fast path's padding: zeros


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_dropout_sits_where_transformers_puts_it(family_dirs, family, monkeypatch):
    """In training, with every dropout made deterministic (x * (1 - p)), the outputs match transformers': a
    dropout that one has and the other lacks (DistilBERT has none on its attention's output) shows."""
    monkeypatch.setattr(torch.nn.functional, "dropout",
                        lambda x, p=0.5, training=True, inplace=False: x * (1 - p) if training else x)
    folder = family_dirs[family]
    batch = batch_of(folder)
    real = batch["attention_mask"].bool()
    theirs = reference(folder).train()(**batch).last_hidden_state
    for path in ("reference", "fast"):
        ours = convert(load_model(folder, attn_implementation="eager"), path).train()
        mine = ours(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        torch.testing.assert_close(mine[real], theirs[real], atol=1e-5, rtol=0, msg=path)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_gradients_of_every_parameter_match_transformers(family_dirs, family):
    folder = family_dirs[family]
    batch = batch_of(folder)
    real = batch["attention_mask"][..., None].float()
    theirs = reference(folder)
    out = theirs(**batch).last_hidden_state
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * weights * real).sum().backward()
    grads = dict(theirs.named_parameters())
    for path in ("reference", "fast"):
        ours = convert(load_model(folder, attn_implementation="eager"), path)
        mine = ours(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        (mine * weights * real).sum().backward()
        from minibert.weights import split_qkv

        key_map = ours.key_map(ours.config, ours.pooler is not None)
        ours_grads = split_qkv({n: p.grad for n, p in ours.named_parameters()})
        for name, theirs_name in key_map.items():
            if name not in ours_grads:  # a fixed sinusoidal table is a buffer here
                assert theirs_name.endswith("position_embeddings.weight") and family.endswith("sinusoidal")
                continue
            expected = grads[theirs_name].grad
            if expected is None:  # the pooler: unused by this loss
                assert ours_grads[name] is None, name
                continue
            torch.testing.assert_close(ours_grads[name], expected, atol=1e-5, rtol=1e-4, msg=f"{path}: {name}")


def st_pipeline(folder: Path, out: Path, include_prompt: bool = True) -> None:
    """A sentence-transformers folder of the family: mean pooling, Dense (tanh) to 24 dims, Normalize, prompts."""
    torch.manual_seed(0)
    modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
    transformer = modules.Transformer(str(folder), max_seq_length=40)
    pooling = modules.Pooling(32, pooling_mode="mean", include_prompt=include_prompt)
    dense = modules.Dense(32, 24, activation_function=torch.nn.Tanh())
    model = st.SentenceTransformer(modules=[transformer, pooling, dense, modules.Normalize()], device="cpu",
                                   prompts={"query": "query: ", "passage": "passage: "}, default_prompt_name="passage")
    model.save(str(out))


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("include_prompt", [True, False], ids=["prompt-pooled", "prompt-left-out"])
def test_sentence_transformers_pipeline_with_dense_normalize_and_prompts(family_dirs, tmp_path, family,
                                                                        include_prompt):
    st_pipeline(family_dirs[family], tmp_path / "st", include_prompt)
    theirs = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    ours = SentenceEncoder.from_pretrained(tmp_path / "st")
    assert len(ours.dense) == 1 and ours.normalize and ours.embedding_dim == 24 and ours.tokenizer.max_length == 40
    for kwargs in ({}, {"prompt_name": "query"}, {"prompt": "Represent this: "}, {"truncate_dim": 8},
                   {"truncate_dim": 8, "normalize_embeddings": True}):
        expected = theirs.encode(SENTENCES, batch_size=3, convert_to_tensor=True, **kwargs).cpu()
        for path in ("reference", "fast"):
            got = ours.encode(SENTENCES, batch_size=3, convert_to="torch", path=path, **kwargs)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=f"{path}, {kwargs}")
    with pytest.raises(ValueError, match=r"prompt_name 'doc' is not one of the model's prompts \[.*'passage'"):
        ours.encode(["a"], prompt_name="doc")
    # encode_query takes the "query" prompt, encode_document the "document" one (empty here), not the default
    calls = ("encode_query", {}), ("encode_document", {}), ("encode_document", {"prompt_name": "query"})
    for method, kwargs in calls:
        expected = getattr(theirs, method)(SENTENCES, batch_size=3, convert_to_tensor=True, **kwargs).cpu()
        got = getattr(ours, method)(SENTENCES, batch_size=3, convert_to_tensor=True, **kwargs)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=f"{method}, {kwargs}")
    expected = theirs.encode(SENTENCES, batch_size=3, output_value="token_embeddings")  # the default prompt's too
    for path in ("reference", "fast"):
        got = ours.encode(SENTENCES, batch_size=3, output_value="token_embeddings", path=path)
        for i, (row, ref) in enumerate(zip(got, expected, strict=True)):
            torch.testing.assert_close(row, ref.cpu(), atol=1e-5, rtol=0, msg=f"{path}, token states of text {i}")


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_saved_back_in_the_familys_layout_transformers_and_sentence_transformers_load_it(family_dirs, tmp_path,
                                                                                          family):
    folder = family_dirs[family]
    ours = load_model(folder)
    with torch.no_grad():  # as if trained, on the fast path (fused QKV)
        fast = convert(ours, "fast")
        fast.blocks[1].attention.qkv.weight.add_(0.01)
    save_pretrained(fast, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == family.removesuffix("-sinusoidal")
    batch = batch_of(folder)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = fast(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        reloaded = reference(tmp_path / "hf")(**batch).last_hidden_state
    torch.testing.assert_close(reloaded[real], expected[real], atol=1e-5, rtol=0)
    encoder = SentenceEncoder.from_pretrained(folder)
    encoder.bert = fast
    from minibert.sentence import save_sentence_transformers_folder

    save_sentence_transformers_folder(encoder, tmp_path / "st")
    theirs = st.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    np.testing.assert_allclose(encoder.encode(SENTENCES), theirs.encode(SENTENCES), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_strict_loading_names_the_tensor(family_dirs, tmp_path, family):
    folder = tmp_path / "copy"
    shutil.copytree(family_dirs[family], folder)
    tensors = load_file(folder / "model.safetensors")
    victim = sorted(k for k in tensors if "layer.1" in k)[0]
    save_file({k: v for k, v in tensors.items() if k != victim}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=rf"missing 1 tensors: {victim}"):
        load_model(folder)
    save_file({**tensors, victim: tensors[victim][..., :-1].contiguous()}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=rf"tensor {victim} has shape"):
        load_model(folder)
    save_file({**tensors, "encoder.rotary.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected 1 tensors: encoder.rotary.weight"):
        load_model(folder)


def test_roberta_positions_start_after_padding_and_cover_max_tokens(family_dirs):
    ours = SentenceEncoder.from_pretrained(family_dirs["roberta"], path="reference")
    assert ours.bert.max_tokens == ours.tokenizer.max_length == 64  # 66 positions, the first two never used
    with pytest.raises(ValueError, match="sequence length 65 exceeds the 64 tokens"):
        ours.bert(torch.full((1, 65), 5))


@pytest.mark.parametrize("family", ["distilbert", "roberta", "mpnet"])
def test_multi_task_training_on_a_family(family_dirs, tiny_data, tmp_path, family):
    """Every task type trains on the family (fast path, the default) and the saved model loads back."""
    from minibert.multitask import MultiTaskModel
    from minibert.train import load_config, train

    from conftest import tiny_config

    config = tiny_config(family_dirs[family], tiny_data, tmp_path / "run", steps=14, eval={"every": 0},
                         output={"log_every": 1})
    config["tasks"] += [{"name": "cross", "type": "cross_sts", "train": str(tiny_data / "sts.tsv")},
                        {"name": "pairs", "type": "pairs", "train": str(tiny_data / "pairs.tsv")}]
    train(load_config(None, base=config))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in line]
    assert {t for step in losses for t in step} == {t["name"] for t in config["tasks"]}  # round robin: all 7
    assert all(np.isfinite(v) for step in losses for v in step.values())
    trained = MultiTaskModel.load(tmp_path / "run" / "final")
    assert type(trained.encoder.bert).__mro__[1:].count(FAMILIES[family]) == 1
    saved = load_file(tmp_path / "run" / "final" / "model.safetensors")
    assert saved.keys() == load_file(family_dirs[family] / "model.safetensors").keys()  # its own layout


def test_a_branch_reads_mpnets_relative_position_bias(family_dirs):
    """MPNet adds a bias from a table of the encoder's to every block's scores: a new branch (minibert.branch)
    gives the encoder's own logits, and ``encoder_grad`` scales what the branch sends to that table too."""
    from minibert.data import TextExample
    from minibert.multitask import MultiTaskModel

    task = {"name": "s", "type": "classification", "labels": ["a", "b"]}
    plain, branched = (MultiTaskModel.from_encoder(family_dirs["mpnet"], [t], seed=0, path="reference")
                       for t in (task, {**task, "branch": 1}))
    batch = plain.collate("s", [TextExample(t, i % 2) for i, t in enumerate(SENTENCES[2:])])
    with torch.no_grad():
        assert torch.equal(plain("s", batch).logits, branched("s", batch).logits)
    table = branched.encoder.bert.relative_attention_bias.weight
    branched.train()
    grads = []
    for scale in (1.0, 0.25):
        branched.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks both times
        branched("s", batch, scale).loss.backward()
        grads.append(table.grad.clone())
    torch.testing.assert_close(grads[1], 0.25 * grads[0])
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_minibert_verify_passes_on_every_family(family_dirs, tmp_path, family, capsys):
    from minibert.cli import main

    st_pipeline(family_dirs[family], tmp_path / "st")
    for folder in (family_dirs[family], tmp_path / "st"):  # a plain folder, and one with Dense and Normalize
        assert main(["verify", str(folder)]) == 0
        out = capsys.readouterr().out
        assert "token ids equal to sentence-transformers' tokenizer's: yes" in out and "after 2" in out
        assert "FAIL" not in out


@pytest.mark.parametrize("family, side", [("roberta", "right"), ("xlm-roberta", "right"), ("mpnet", "right"),
                                          ("distilbert", "right"), ("roberta", "left"), ("mpnet", "left")])
def test_a_familys_cross_encoder_scores_as_sentence_transformers_cross_encoder(family_dirs, tmp_path, family, side):
    """And from a tokenizer that pads on the left (taken where positions skip the pads): the export says right,
    as minibert pads, since transformers' classification heads read the first column of the batch."""
    from minibert.data import PairExample
    from minibert.multitask import MultiTaskModel
    from minibert.tasks.cross_sts import save_cross_encoder

    folder = family_dirs[family]
    if side == "left":
        folder = shutil.copytree(folder, tmp_path / "left")
        settings = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps(settings | {"padding_side": "left"}))
    ours = MultiTaskModel.from_encoder(folder, [{"name": "cross", "type": "cross_sts"}], seed=3)
    assert ours.encoder.tokenizer.padding_side == side
    if family == "distilbert":
        with pytest.raises(ValueError, match="a distilbert cross-encoder has no transformers class"):
            save_cross_encoder(ours, "cross", tmp_path / "ce")
        return
    with torch.no_grad():
        ours.heads["cross"].out.weight.normal_(0, 0.5)
    save_cross_encoder(ours, "cross", tmp_path / "ce")
    reference = st.CrossEncoder(str(tmp_path / "ce"), device="cpu")
    assert reference.tokenizer.padding_side == "right"
    pairs = [(a, b) for a, b in zip(SENTENCES[1:], SENTENCES[:-1], strict=True)]
    expected = torch.as_tensor(reference.predict(pairs, batch_size=len(pairs))).float()
    logits = ours("cross", ours.collate("cross", [PairExample(a, b) for a, b in pairs])).logits
    torch.testing.assert_close(torch.sigmoid(logits), expected, atol=1e-5, rtol=0)
    assert expected.std() > 1e-3


def test_a_pipeline_with_dense_and_prompts_exports_back(family_dirs, tmp_path, capsys):
    """Read (Dense, Normalize, prompts, include_prompt=false), written back, read by sentence-transformers;
    and the command line's --prompt-name and --truncate-dim."""
    from minibert.cli import main
    from minibert.sentence import save_sentence_transformers_folder

    st_pipeline(family_dirs["mpnet"], tmp_path / "st", include_prompt=False)
    ours = SentenceEncoder.from_pretrained(tmp_path / "st")
    save_sentence_transformers_folder(ours, tmp_path / "again")
    theirs = st.SentenceTransformer(str(tmp_path / "again"), device="cpu")
    for kwargs in ({}, {"prompt_name": "query"}):
        torch.testing.assert_close(ours.encode(SENTENCES, convert_to="torch", **kwargs),
                                   theirs.encode(SENTENCES, convert_to_tensor=True, **kwargs).cpu(), atol=1e-5, rtol=0)
    (tmp_path / "in.txt").write_text("\n".join(SENTENCES[1:]) + "\n")
    out = tmp_path / "emb.npy"
    assert main(["encode", "--model", str(tmp_path / "st"), "--input", str(tmp_path / "in.txt"), "--output",
                 str(out), "--prompt-name", "query", "--truncate-dim", "8"]) == 0
    np.testing.assert_allclose(np.load(out), ours.encode(SENTENCES[1:], prompt_name="query", truncate_dim=8),
                               atol=1e-6, rtol=0)
    assert main(["similarity", "--model", str(tmp_path / "st"), "--prompt-name", "nope", "a", "b"]) == 1
    assert "prompt_name 'nope' is not one of the model's prompts" in capsys.readouterr().err

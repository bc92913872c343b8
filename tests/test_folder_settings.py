"""Each setting a folder can hold, one at a time, against sentence-transformers (and transformers) on the same
folder. Every folder is built as a user gets one: transformers saves a small random model and its tokenizer,
sentence-transformers builds its pipeline and saves it (``tests/differential.py``), then one setting is written
in the form an older version wrote it, or left out. ``compare`` encodes the same sentences (special tokens in
the text, mixed case, Greek, CJK, emoji, past the limit) with both, on minibert's reference and fast paths.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from minibert import SentenceEncoder
from minibert.sentence import save_sentence_transformers_folder
from minibert.tokenizer import TruncationWarning

from differential import assert_matches, compare, edit, folder_of
from folders import SENTENCES

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
transformers = pytest.importorskip("transformers", reason="transformers builds the folders")


def test_truncate_dim_stored_in_the_folder(tmp_path):
    c, folder = folder_of(tmp_path, "bert", truncate_dim=8, normalize=True)
    assert json.loads((folder / "config_sentence_transformers.json").read_text())["truncate_dim"] == 8
    ours = SentenceEncoder.from_pretrained(folder)
    assert ours.encode(SENTENCES).shape == (len(SENTENCES), 8)
    assert ours.encode(SENTENCES, truncate_dim=4).shape == (len(SENTENCES), 4)  # the call's wins
    assert_matches(c, folder)


@pytest.mark.parametrize("normalize_embeddings", [False, True])
def test_normalize_embeddings_adds_to_the_folders_normalize_module(tmp_path, normalize_embeddings):
    """normalize_embeddings=False cannot switch a Normalize module off; True normalises after truncate_dim."""
    c, folder = folder_of(tmp_path, "bert", normalize=True, pass_truncate=6, normalize_embeddings=normalize_embeddings)
    ours = SentenceEncoder.from_pretrained(folder)
    norms = np.linalg.norm(ours.encode(SENTENCES, normalize_embeddings=normalize_embeddings), axis=1)
    assert (np.abs(norms - 1) < 1e-5).all()
    truncated = ours.encode(SENTENCES, truncate_dim=6, normalize_embeddings=normalize_embeddings)
    truncated = np.linalg.norm(truncated, axis=1)
    assert (np.abs(truncated - 1) < 1e-5).all() == normalize_embeddings
    assert_matches(c, folder)


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet"])
def test_do_lower_case_false_in_tokenizer_config_beside_a_lowercasing_tokenizer_json(tmp_path, family):
    """transformers 5 builds the normaliser from tokenizer_config.json, whatever tokenizer.json says."""
    c, folder = folder_of(tmp_path, family, lower=False, files="json_lowercase")
    data = json.loads((folder / "tokenizer.json").read_text())
    assert data["normalizer"]["lowercase"] and not json.loads((folder / "tokenizer_config.json").read_text())[
        "do_lower_case"]
    ours = SentenceEncoder.from_pretrained(folder).tokenizer
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert ours(SENTENCES[:3]).input_ids.tolist() == theirs(SENTENCES[:3], padding=True)["input_ids"]
    assert_matches(c, folder)


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "mpnet"])
def test_a_missing_layer_norm_eps_is_transformers_default(tmp_path, family):
    c, folder = folder_of(tmp_path, family, eps="drop")
    assert "layer_norm_eps" not in json.loads((folder / "config.json").read_text())
    assert SentenceEncoder.from_pretrained(folder).bert.config.layer_norm_eps == 1e-12
    assert_matches(c, folder)


def test_an_mpnet_folder_with_vocab_txt_only_has_its_own_special_tokens(tmp_path):
    c, folder = folder_of(tmp_path, "mpnet", files="vocab")
    assert not (folder / "tokenizer.json").exists()
    ours = SentenceEncoder.from_pretrained(folder).tokenizer
    assert ours.backend.encode("a").tokens[0] == "<s>" and ours.backend.encode("a").tokens[-1] == "</s>"
    assert_matches(c, folder)


def test_weightedmean_keeps_the_positions_of_the_tokens_after_a_left_out_prompt(tmp_path):
    c, folder = folder_of(tmp_path, "bert", pooling=["weightedmean"], include_prompt=False, prompts=True,
                          prompt_call="name")
    assert_matches(c, folder)


def test_a_config_without_model_type_is_refused(tmp_path):
    c, folder = folder_of(tmp_path, "roberta", drop_model_type=True)
    with pytest.raises(ValueError, match="has no model_type"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "both"  # transformers refuses it too


@pytest.mark.parametrize("family, settings", [
    ("bert", {"act": "silu"}), ("distilbert", {"act": "quick_gelu"}), ("mpnet", {"act": "gelu_new"}),
    ("roberta", {"files": "no_tokenizer_config"}), ("xlm-roberta", {"files": "no_tokenizer_config"}),
    ("roberta", {"files": "vocab"}), ("bert", {"files": "special_tokens_map"}),
    ("mpnet", {"files": "added_tokens_decoder"}), ("bert", {"files": "token_dicts"}),
    ("distilbert", {"files": "no_tokenizer_class"}), ("roberta", {"files": "verbatim"}),
], ids=lambda x: x if isinstance(x, str) else "-".join(map(str, x.values())))
def test_folders_that_sentence_transformers_loads_are_loaded(tmp_path, family, settings):
    assert_matches(*folder_of(tmp_path, family, **settings))


@pytest.mark.parametrize("settings", [
    {"module_form": "old", "st_max": 20, "st_lower": True}, {"module_form": "old_renamed", "st_max": 20},
    {"module_form": "tokenizer_args", "lower": False}, {"module_form": "model_args"},
    {"module_form": "config_args"}, {"module_form": "no_modules", "prompts": True},
    {"old_class_names": True, "legacy_pooling": True, "pooling": ["mean", "cls"]},
    {"st_config_form": "v2", "prompts": True, "default_prompt": True},
    {"truncation_side": "left", "tokenizer_max": 24}, {"dtype": "bfloat16"},
], ids=lambda s: "-".join(map(str, s.values())))
def test_older_and_rarer_forms_of_a_folder(tmp_path, settings):
    assert_matches(*folder_of(tmp_path, "roberta", **settings))


def test_an_unknown_similarity_name_is_cosine_with_a_warning(tmp_path):
    c, folder = folder_of(tmp_path, "bert", similarity="dot", st_config_form="bad_similarity")
    with pytest.warns(UserWarning, match="similarity_fn_name 'dot_product' is not one of"):
        assert SentenceEncoder.from_pretrained(folder).settings.similarity_fn_name == "cosine"
    assert_matches(c, folder)


@pytest.mark.parametrize("settings, refusal", [
    ({"act": "prelu"}, "has learnt parameters of its own"),
    ({"padding_side": "left"}, "padding_side 'left' in a model whose positions are the columns of the padded batch"),
    ({"dense": [(8, "mypackage.Swish", True, False)]}, "is not a torch class"),
])
def test_settings_minibert_refuses_are_named(tmp_path, settings, refusal):
    """What sentence-transformers runs but minibert refuses, each naming the file and the setting: prelu's
    parameters are not in the checkpoint (transformers draws them at random), a Dense activation outside torch
    (sentence-transformers runs Tanh in its place), left padding."""
    c, folder = folder_of(tmp_path, "bert", **settings)
    with pytest.raises(ValueError, match=refusal):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "refused"


@pytest.mark.parametrize("family, pooling", [("roberta", ["mean"]), ("xlm-roberta", ["cls", "max"]),
                                             ("mpnet", ["weightedmean"]), ("roberta", ["lasttoken"])])
def test_left_padding_where_positions_skip_the_pads(tmp_path, family, pooling):
    """RoBERTa, XLM-R and MPNet number only the real tokens, so sentence-transformers' left-padded batches give
    what minibert's right-padded ones give: sentences of different lengths in one batch, a prompt left out."""
    c, folder = folder_of(tmp_path, family, padding_side="left", pooling=pooling, batch_size=8, prompts=True,
                          include_prompt=False, prompt_call="name")
    reference = st.SentenceTransformer(str(folder), device="cpu")
    assert (reference.tokenize(SENTENCES[:8])["attention_mask"][:, 0] == 0).any()  # it does pad on the left
    ours = SentenceEncoder.from_pretrained(folder)
    assert ours.tokenizer.padding_side == "left"
    assert_matches(c, folder)
    save_sentence_transformers_folder(ours, tmp_path / "saved")  # written as minibert pads: the same numbers
    saved = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert saved["padding_side"] == "right"
    torch.testing.assert_close(st.SentenceTransformer(str(tmp_path / "saved"), device="cpu").encode(
        SENTENCES[:8], convert_to_tensor=True), reference.encode(SENTENCES[:8], convert_to_tensor=True),
        atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_left_padding_where_it_would_move_the_tokens_is_refused(tmp_path, family):
    """BERT and DistilBERT: a position is a column of the batch. RoBERTa whose positions skip another id than
    the tokenizer pads with (config.json's pad_token_id changed): its pads take positions."""
    c, folder = folder_of(tmp_path, family, padding_side="left")
    refusal = r"tokenizer_config.json: padding_side 'left' in a model whose positions are the columns of the padded"
    if family == "roberta":
        edit(folder / "config.json", pad_token_id=0)
        refusal = r"positions skip token id 0 \(config.json's pad_token_id; MPNet's is 1\), but the tokenizer pads " \
                  r"with id 1 \('<pad>'\)"
    with pytest.raises(ValueError, match=refusal):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "refused"


def test_encode_in_another_dtype_leaves_the_weights_as_they_were(minilm, sentences):
    before = minilm.encode(sentences, convert_to="torch")
    bf16 = minilm.encode(sentences, dtype=torch.bfloat16, convert_to="torch")
    assert bf16.dtype == torch.bfloat16 and next(minilm.parameters()).dtype == torch.float32
    assert torch.equal(minilm.encode(sentences, convert_to="torch"), before)  # float32 again, exactly
    expected = SentenceEncoder.from_pretrained(minilm.tokenizer.source, dtype=torch.bfloat16).encode(
        sentences, convert_to="torch")
    assert torch.equal(bf16, expected)  # the same as a model loaded in bf16


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_is_the_folders_function(tmp_path, name):
    from sentence_transformers import util

    from minibert.search import semantic_search

    _, folder = folder_of(tmp_path, "bert", similarity=name)
    ours, theirs = SentenceEncoder.from_pretrained(folder), st.SentenceTransformer(str(folder), device="cpu")
    assert ours.settings.similarity_fn_name == name == theirs.similarity_fn_name
    a, b = ours.encode(SENTENCES[:6]), ours.encode(SENTENCES[6:12])
    torch.testing.assert_close(ours.similarity(a, b), theirs.similarity(a, b), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.similarity_pairwise(a, b), theirs.similarity_pairwise(a, b), atol=1e-5, rtol=0)
    ours_hits = semantic_search(b, a, top_k=3, score=name)
    their_hits = util.semantic_search(torch.as_tensor(b), torch.as_tensor(a), top_k=3,
                                      score_function=theirs.similarity)
    assert [[h["corpus_id"] for h in hits] for hits in ours_hits] == \
        [[h["corpus_id"] for h in hits] for hits in their_hits]
    np.testing.assert_allclose([[h["score"] for h in hits] for hits in ours_hits],
                               [[h["score"] for h in hits] for hits in their_hits], atol=1e-5)


@pytest.mark.parametrize("key, value, refusal", [
    ("transformer_task", "text-generation", "transformer_task 'text-generation'"),
    ("modality_config", {"message": {"method": "forward", "method_output_name": "last_hidden_state"}},
     "no chat template"),
    ("processing_kwargs", {"text": {"max_length": 8}}, "processing_kwargs"),
    ("model_args", {"trust_remote_code": True, "revision": "main"}, "model_kwargs 'revision'"),
    ("pooling_mode", "cls", "'pooling_mode' is not a setting"),
])
def test_module_config_keys_minibert_does_not_run_are_refused_by_name(model_copy, key, value, refusal):
    folder = model_copy()
    path = folder / "sentence_bert_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(ValueError, match=refusal) as error:
        SentenceEncoder.from_pretrained(folder)
    assert str(path) in str(error.value)


def test_minibert_search_and_mine_use_the_folders_similarity(tmp_path, capsys):
    """On a dot-product folder `minibert search` ranks by the dot product, as sentence-transformers'
    semantic_search with the model's similarity does; --score chooses another."""
    from sentence_transformers import util

    from minibert.cli import main

    _, folder = folder_of(tmp_path, "bert", similarity="dot")
    lines = [s for s in SENTENCES if s and "\n" not in s]  # one a line
    corpus, queries = tmp_path / "corpus.txt", tmp_path / "queries.txt"
    corpus.write_text("\n".join(lines[5:]) + "\n")
    queries.write_text("\n".join(lines[:5]) + "\n")
    theirs = st.SentenceTransformer(str(folder), device="cpu")
    query_embeddings, corpus_embeddings = (theirs.encode(part, convert_to_tensor=True)
                                           for part in (lines[:5], lines[5:]))
    expected = util.semantic_search(query_embeddings, corpus_embeddings, top_k=3, score_function=util.dot_score)
    cosine = util.semantic_search(query_embeddings, corpus_embeddings, top_k=3)
    assert expected != cosine  # the two scores rank differently here
    for arguments, wanted in (([], expected), (["--score", "cosine"], cosine)):
        out = tmp_path / "hits.jsonl"
        assert main(["search", "--model", str(folder), "--corpus", str(corpus), "--queries", str(queries),
                     "--top-k", "3", "--output", str(out), *arguments]) == 0
        hits = [json.loads(line)["hits"] for line in out.read_text().splitlines()]
        assert [[h["corpus_id"] for h in q] for q in hits] == [[h["corpus_id"] for h in q] for q in wanted]
        np.testing.assert_allclose([[h["score"] for h in q] for q in hits], [[h["score"] for h in q] for q in wanted],
                                   atol=1e-4)
    assert main(["mine", "--model", str(folder), "--input", str(corpus), "--top-k", "2"]) == 0
    assert "closest pairs by dot" in capsys.readouterr().out


def test_minibert_search_embeds_queries_and_corpus_as_sentence_transformers_retrieval_does(tmp_path):
    """Queries by encode_query (the "query" prompt and query_length), the corpus by encode_document (the "document"
    prompt, empty here, not the default "query" one), as sentence-transformers recommends for retrieval."""
    from sentence_transformers import util

    from minibert.cli import main

    _, folder = folder_of(tmp_path, "bert", prompts=True, default_prompt=True)
    edit(folder / "sentence_bert_config.json", query_length=12)
    lines = [s for s in SENTENCES if s and "\n" not in s]
    (tmp_path / "corpus.txt").write_text("\n".join(lines[5:]) + "\n")
    (tmp_path / "queries.txt").write_text("\n".join(lines[:5]) + "\n")
    theirs = st.SentenceTransformer(str(folder), device="cpu")
    expected = util.semantic_search(theirs.encode_query(lines[:5], convert_to_tensor=True),
                                    theirs.encode_document(lines[5:], convert_to_tensor=True), top_k=4)
    plain = util.semantic_search(theirs.encode(lines[:5], convert_to_tensor=True),
                                 theirs.encode(lines[5:], convert_to_tensor=True), top_k=4)
    assert [[h["score"] for h in q] for q in expected] != [[h["score"] for h in q] for q in plain]  # (it matters)
    out = tmp_path / "hits.jsonl"
    assert main(["search", "--model", str(folder), "--corpus", str(tmp_path / "corpus.txt"), "--queries",
                 str(tmp_path / "queries.txt"), "--top-k", "4", "--output", str(out)]) == 0
    hits = [json.loads(line)["hits"] for line in out.read_text().splitlines()]
    assert [[h["corpus_id"] for h in q] for q in hits] == [[h["corpus_id"] for h in q] for q in expected]
    np.testing.assert_allclose([[h["score"] for h in q] for q in hits], [[h["score"] for h in q] for q in expected],
                               atol=1e-5)
    # a corpus embedded before, as its documents: `minibert encode --task document`
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "corpus.txt"), "--task", "document",
                 "--output", str(tmp_path / "corpus.npy"), "--preview", "0"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "corpus.npy"), theirs.encode_document(lines[5:]), atol=1e-5)
    assert main(["search", "--model", str(folder), "--corpus", str(tmp_path / "corpus.npy"), "--queries",
                 str(tmp_path / "queries.txt"), "--top-k", "4", "--output", str(out)]) == 0
    hits = [json.loads(line)["hits"] for line in out.read_text().splitlines()]
    assert [[h["corpus_id"] for h in q] for q in hits] == [[h["corpus_id"] for h in q] for q in expected]


@pytest.mark.parametrize("case", [
    "model's own special token", "processor_kwargs over special_tokens_map",
    "tokenizer_class of processor_kwargs not read", "tokenizer_class of processor_kwargs over config.json's",
    "tokenizer_args over processor_kwargs",
    "additional tokens of special_tokens_map", "pad token from tokenizer.json",
    "torch_dtype auto", "do_lower_case null", "truncate_dim past the dimensions"])
def test_settings_read_as_the_references_read_them(tmp_path, case):
    """Each a way a folder can say something, read with transformers' and sentence-transformers' precedence."""
    c, folder = folder_of(tmp_path, "bert", files="json_lowercase" if "tokenizer_class" in case else "json",
                          lower=False if "tokenizer_class" in case else True)
    tok_config, module_config = folder / "tokenizer_config.json", folder / "sentence_bert_config.json"
    if case == "model's own special token":  # any "..._token" setting is a special token of the model's own
        edit(tok_config, sop_token="music")
    elif case == "processor_kwargs over special_tokens_map":
        edit(folder / "special_tokens_map.json", cls_token="[MASK]")
        edit(module_config, processor_kwargs={"cls_token": "[CLS]"})
    elif case == "tokenizer_class of processor_kwargs not read":
        edit(module_config, processor_kwargs={"tokenizer_class": "PreTrainedTokenizerFast"})
    elif case == "tokenizer_class of processor_kwargs over config.json's":  # where tokenizer_config.json has none
        from folder_forms import rare_tokenizer_form
        rare_tokenizer_form("class_in_config", folder)
        edit(module_config, processor_kwargs={"tokenizer_class": "PreTrainedTokenizerFast"})
    elif case == "tokenizer_args over processor_kwargs":
        edit(module_config, tokenizer_args={"do_lower_case": False}, processor_kwargs={"do_lower_case": True})
    elif case == "additional tokens of special_tokens_map":  # kept apart from tokenizer_config.json's
        (folder / "added_tokens.json").write_text(json.dumps({"crowd": 1000}))  # (in the vocabulary: its id kept)
        edit(folder / "special_tokens_map.json", additional_special_tokens=["crowd", "music"])
        edit(tok_config, additional_special_tokens=[])
    elif case == "pad token from tokenizer.json":  # the verbatim class's pad token comes from tokenizer.json
        data = json.loads((folder / "tokenizer.json").read_text())
        data["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                           "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
        (folder / "tokenizer.json").write_text(json.dumps(data))
        raw = json.loads(tok_config.read_text())
        tok_config.write_text(json.dumps({k: v for k, v in raw.items() if k != "pad_token"} |
                                         {"tokenizer_class": "PreTrainedTokenizerFast"}))
    elif case == "torch_dtype auto":
        edit(module_config, model_kwargs={"torch_dtype": "auto"})
    elif case == "do_lower_case null":
        edit(module_config, do_lower_case=None)
    else:
        edit(folder / "config_sentence_transformers.json", truncate_dim=10_000)
    texts = ["Someone plays xmusicx for the xcrowdx", "HELLO world [CLS]"]
    theirs = st.SentenceTransformer(str(folder), device="cpu")
    ours = SentenceEncoder.from_pretrained(folder)
    assert ours.tokenizer(texts).input_ids.tolist() == theirs.preprocess(texts)["input_ids"].tolist()
    assert_matches(c, folder)


def test_a_module_name_listed_twice_keeps_the_later_module_in_the_first_place(tmp_path):
    """sentence-transformers keeps modules.json's modules by name: a Normalize named like the Dense before it
    runs in the Dense's place, and the Dense not at all."""
    c, folder = folder_of(tmp_path, "bert", dense=[(8, "torch.nn.modules.activation.Tanh", True, False)],
                          normalize=True)
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    modules[3]["name"] = modules[2]["name"]
    (folder / "modules.json").write_text(json.dumps(modules))
    assert SentenceEncoder.from_pretrained(folder).embedding_dim == 32  # (the Dense would give 8)
    assert_matches(c, folder)


def test_processor_kwargs_that_change_no_token_id_pass(tmp_path):
    c, folder = folder_of(tmp_path, "bert")
    edit(folder / "sentence_bert_config.json", processor_kwargs={
        "max_length": 5, "padding": "max_length", "truncation": False, "subfolder": "x", "never_split": ["hello"],
        "do_basic_tokenize": False, "clean_up_tokenization_spaces": True, "use_fast": False, "from_slow": True})
    assert_matches(c, folder)


@pytest.mark.parametrize("setting", [{"add_eos_token": False}, {"tokenizer_type": "bert"}])
def test_processor_kwargs_minibert_does_not_run_are_refused(tmp_path, setting):
    """A module config's processor_kwargs reach transformers' tokenizer as they are: add_eos_token rebuilds a
    plain tokenizer.json's template without its [SEP], tokenizer_type picks another class (BertTokenizer, which
    lowercases); settings minibert does not run are refused, not dropped."""
    c, folder = folder_of(tmp_path, "bert", files="json_lowercase", lower=False)
    edit(folder / "tokenizer_config.json", tokenizer_class="PreTrainedTokenizerFast")
    texts = ["HELLO world"]
    plain = st.SentenceTransformer(str(folder), device="cpu").preprocess(texts)["input_ids"].tolist()
    assert SentenceEncoder.from_pretrained(folder).tokenizer(texts).input_ids.tolist() == plain
    edit(folder / "sentence_bert_config.json", processor_kwargs=setting)
    assert st.SentenceTransformer(str(folder), device="cpu").preprocess(texts)["input_ids"].tolist() != plain
    with pytest.raises(ValueError, match=f"processor_kwargs '{next(iter(setting))}' is not a tokenizer setting"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "refused"


@pytest.mark.parametrize("case, refusal", [
    ("a module class of the folder's own", "is not supported by minibert"),
    ("no Pooling module", "minibert runs Transformer, Pooling"),
    ("an unknown pooling setting", "'pooling_modes' is not a setting of sentence-transformers' Pooling"),
    ("a special token as an untyped dict", "cls_token: expected a token"),
    ("model_input_names without attention_mask", "model_input_names"),
    ("prompts null", "prompts must map names to texts"),
    ("a PEFT adapter", "a PEFT adapter, which sentence-transformers and transformers apply to the model"),
    ("a module without a name", "module 1 needs a name"),
    ("a module named by a number", "module 1 needs a name"),
    ("a module of the folder's own, replaced by name", "'custom_st.Pooling' .* is not supported by minibert"),
    ("a special token of processor_kwargs as an untyped dict", "cls_token: expected a token"),
])
def test_folders_the_references_cannot_run_are_refused(tmp_path, case, refusal):
    """What sentence-transformers or transformers fails on (or runs only with the folder's own code), minibert
    refuses too, naming the file and the setting."""
    c, folder = folder_of(tmp_path, "bert")
    modules = json.loads((folder / "modules.json").read_text())
    if case == "a module class of the folder's own":
        modules[1]["type"] = "custom_st.Pooling"
        (folder / "modules.json").write_text(json.dumps(modules))
    elif case == "no Pooling module":
        (folder / "modules.json").write_text(json.dumps(modules[:1]))
    elif case == "an unknown pooling setting":
        edit(folder / "1_Pooling" / "config.json", pooling_modes="cls")
    elif case == "a special token as an untyped dict":
        edit(folder / "tokenizer_config.json", cls_token={"content": "[CLS]"})
    elif case == "model_input_names without attention_mask":
        edit(folder / "tokenizer_config.json", model_input_names=["input_ids", "token_type_ids"])
    elif case == "a module without a name":
        del modules[1]["name"]
        (folder / "modules.json").write_text(json.dumps(modules))
    elif case == "a module named by a number":
        modules[1]["name"] = 1
        (folder / "modules.json").write_text(json.dumps(modules))
    elif case == "a module of the folder's own, replaced by name":  # (sentence-transformers loads it all the same)
        modules.insert(1, {**modules[1], "type": "custom_st.Pooling"})
        (folder / "modules.json").write_text(json.dumps(modules))
    elif case == "a special token of processor_kwargs as an untyped dict":
        edit(folder / "sentence_bert_config.json", processor_kwargs={"cls_token": {"content": "[CLS]"}})
    elif case == "a PEFT adapter":  # (its weights would sit in adapter_model.safetensors; peft is not installed here)
        edit(folder / "adapter_config.json", peft_type="LORA", base_model_name_or_path=str(folder), r=4,
             target_modules=["query", "value"])
    else:
        edit(folder / "config_sentence_transformers.json", prompts=None)
    with pytest.raises(ValueError, match=refusal):
        SentenceEncoder.from_pretrained(folder)
    if case != "model_input_names without attention_mask":  # (sentence-transformers runs it without the mask)
        assert compare(c, folder).kind == "both"


def test_small_api_agreements(minilm):
    """encode(prompt=..., prompt_name=...) uses the prompt with a warning; a pairwise score of two vectors is one
    number; similarity takes a list of bf16 tensors."""
    with pytest.warns(UserWarning, match="both prompt and prompt_name"):
        a = minilm.encode(["x"], prompt="query: ", prompt_name="query")
    np.testing.assert_array_equal(a, minilm.encode(["x"], prompt="query: "))
    u, v = minilm.encode(["a man", "a woman"])
    assert minilm.similarity_pairwise(u, v).shape == ()
    bf16 = [torch.tensor(u, dtype=torch.bfloat16), torch.tensor(v, dtype=torch.bfloat16)]
    assert minilm.similarity(bf16, bf16).shape == (2, 2)


@pytest.mark.parametrize("lengths", [{"query_length": 6}, {"document_length": 7, "query_length": 40}],
                         ids=["query", "both"])
def test_query_and_document_lengths_cut_the_texts_of_their_task(tmp_path, lengths):
    """sentence-transformers truncates encode_query's texts (task "query") at the module config's query_length
    and encode_document's at document_length, in place of the model's limit; encode's own are not cut there."""
    _, folder = folder_of(tmp_path, "bert", prompts=True)
    edit(folder / "sentence_bert_config.json", **lengths)
    theirs = st.SentenceTransformer(str(folder), device="cpu")
    ours = SentenceEncoder.from_pretrained(folder)
    calls = [("encode", {}), ("encode", {"task": "query"}), ("encode_query", {}), ("encode_document", {})]
    for method, kwargs in calls:
        expected = getattr(theirs, method)(SENTENCES, convert_to_tensor=True, **kwargs)
        for path in ("reference", "fast"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                got = getattr(ours, method)(SENTENCES, convert_to_tensor=True, path=path, **kwargs)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0, msg=f"{method} {kwargs} on {path}")
    # the limit changes the embeddings here (the test could fail), and a folder saved back keeps it
    assert not torch.allclose(ours.encode_query(SENTENCES, convert_to="torch"),
                              ours.encode(SENTENCES, prompt_name="query", convert_to="torch"), atol=1e-3)
    save_sentence_transformers_folder(ours, tmp_path / "saved")
    assert SentenceEncoder.from_pretrained(tmp_path / "saved").tokenizer.task_lengths == lengths_by_task(lengths)
    # a limit set anew holds from the next call, as in sentence-transformers
    ours.tokenizer.task_lengths["query"], theirs[0].query_length = 9, 9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        torch.testing.assert_close(ours.encode_query(SENTENCES, convert_to="torch"),
                                   theirs.encode_query(SENTENCES, convert_to_tensor=True), atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match=r"the prompt takes \d+ of the 9 tokens texts are cut at"):
        ours.encode_query(["a"], prompt="a prompt of more words than the limit holds")
    edit(folder / "sentence_bert_config.json", query_length=1)
    with pytest.raises(ValueError, match="sentence_bert_config.json: query_length must be an integer >= 2"):
        SentenceEncoder.from_pretrained(folder)


def lengths_by_task(lengths: dict) -> dict:
    return {key.removesuffix("_length"): value for key, value in lengths.items()}

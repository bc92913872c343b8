"""Settings of config.json and of a plain Hugging Face folder that transformers and sentence-transformers honour
beyond the module configs, one at a time against them: a causal-LM architecture's pooling, a chat template,
``is_causal``, BERT's names in a DistilBERT config, weights stored in mixed dtypes. Folders are built as in
``tests/test_folder_settings.py``.
"""

from __future__ import annotations

import pytest
import torch

from minibert import SentenceEncoder

from differential import assert_matches, compare, edit, folder_of

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
transformers = pytest.importorskip("transformers", reason="transformers builds the folders")


@pytest.mark.parametrize("family, architecture, is_causal, pooling", [
    ("roberta", "RobertaForCausalLM", None, "lasttoken"), ("bert", "BertLMHeadModel", None, "mean"),
    ("bert", "BertForCausalLM", False, "mean"), ("mpnet", "MPNetForCausalLM", True, "lasttoken"),
    ("xlm-roberta", "XLMRobertaForCausalLM", None, "lasttoken")])
def test_a_plain_folder_made_for_causal_lm_pools_its_last_token(tmp_path, family, architecture, is_causal, pooling):
    """Without modules.json, sentence-transformers pools the last token of a model whose config.json names a
    causal-LM architecture first (unless is_causal is false), else the mean."""
    c, folder = folder_of(tmp_path, family, module_form="no_modules")
    causal = {} if is_causal is None else {"is_causal": is_causal}
    edit(folder / "config.json", architectures=[architecture], **causal)
    assert SentenceEncoder.from_pretrained(folder).pooling.config.modes == (pooling,)
    assert st.SentenceTransformer(str(folder), device="cpu")[1].pooling_mode == pooling
    assert_matches(c, folder)


@pytest.mark.parametrize("where", ["tokenizer_config.json", "chat_template.jinja"])
def test_a_chat_template_is_refused_where_sentence_transformers_renders_it(tmp_path, where):
    """A plain folder's chat template is what sentence-transformers runs every text through; in a folder with
    modules.json (written before modality_config existed, or text only) it is not read, and the folder runs."""
    template = "{% for m in messages %}says: {{ m['content'] }}{% endfor %}"
    for form in ("no_modules", "st6", "old"):
        c, folder = folder_of(tmp_path / form, "bert", module_form=form)
        if where == "chat_template.jinja":
            (folder / where).write_text(template)
        else:
            edit(folder / where, chat_template=template)
        if form != "no_modules":
            assert_matches(c, folder)
            continue
        with pytest.raises(ValueError, match=f"{where}.*a chat template, which sentence-transformers renders"):
            SentenceEncoder.from_pretrained(folder)
        assert compare(c, folder).kind == "refused"


@pytest.mark.parametrize("names", [{"hidden_act": "relu"}, {"intermediate_size": 24}, {"num_attention_heads": 2},
                                   {"dropout": 0.5, "hidden_dropout_prob": 0.0, "n_heads": 4}],
                         ids=lambda names: "-".join(names))
def test_distilbert_reads_bert_s_names_only_where_transformers_does(tmp_path, names):
    """transformers' DistilBertConfig reads hidden_size, num_hidden_layers and num_attention_heads over dim,
    n_layers and n_heads, and leaves BERT's other names (hidden_act, intermediate_size, ...) unread."""
    c, folder = folder_of(tmp_path, "distilbert", heads=4, inner=40)
    edit(folder / "config.json", **names)
    config = SentenceEncoder.from_pretrained(folder).bert.config
    theirs = transformers.AutoConfig.from_pretrained(str(folder))
    assert (config.hidden_act, config.intermediate_size, config.num_attention_heads, config.hidden_dropout_prob) == \
        (theirs.activation, theirs.hidden_dim, theirs.n_heads, theirs.dropout)
    assert_matches(c, folder)


@pytest.mark.parametrize("first", ["bfloat16", "float32"])
def test_weights_stored_in_mixed_dtypes_run_in_the_first_one(tmp_path, first):
    """With no dtype in config.json, transformers runs the model in the dtype of the checkpoint's first floating
    tensor (in name order), whatever the others are stored in."""
    from safetensors.torch import load_file, save_file

    c, folder = folder_of(tmp_path, "bert", dtype="drop")
    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    other = torch.float32 if first == "bfloat16" else torch.bfloat16
    tensors = {name: t.to(getattr(torch, first) if name == names[0] else other) for name, t in tensors.items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    assert next(SentenceEncoder.from_pretrained(folder).parameters()).dtype == getattr(torch, first)
    assert_matches(c, folder)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet"])
def test_is_causal_is_refused_where_transformers_masks_causally(tmp_path, family):
    """config.json's is_causal: true makes transformers 5's SDPA attention mask causally (a token sees only
    those before it) in a batch without padding, in every family but MPNet, which ignores it."""
    c, folder = folder_of(tmp_path, family, sentences=[0, 1, 2, 3])  # (within RoBERTa's positions)
    edit(folder / "config.json", is_causal=True)
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        a, b = (model(input_ids=torch.tensor([[5, 6, 7, last]])).last_hidden_state for last in (8, 9))
    assert torch.equal(a[0, :3], b[0, :3]) == (family != "mpnet")  # the last token changed nothing before it
    if family == "mpnet":
        assert_matches(c, folder)
        return
    with pytest.raises(ValueError, match="is_causal=True is not supported"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "refused"


@pytest.mark.parametrize("metadata", [{}, {"dtype": "bfloat16"}])
def test_a_sharded_checkpoint_runs_in_its_index_s_dtype_else_its_first_shard_s(tmp_path, metadata):
    """Without a dtype in config.json, transformers takes the one a shard index's metadata names, else that of the
    first floating tensor of the first shard in name order (here the shard that holds the later tensor names)."""
    from safetensors.torch import load_file, save_file

    c, folder = folder_of(tmp_path, "bert", dtype="drop")
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-a.safetensors": (names[len(names) // 2:], torch.float16),
              "model-b.safetensors": (names[:len(names) // 2], torch.bfloat16)}
    for file, (held, first) in shards.items():
        save_file({n: tensors[n].to(first if n == held[0] else torch.float32) for n in held}, folder / file,
                  metadata={"format": "pt"})
    edit(folder / "model.safetensors.index.json", metadata={"total_size": 1, **metadata},
         weight_map={n: file for file, (held, _) in shards.items() for n in held})
    expected = torch.bfloat16 if metadata else torch.float16
    assert transformers.AutoModel.from_pretrained(str(folder)).dtype == expected
    assert next(SentenceEncoder.from_pretrained(folder).parameters()).dtype == expected
    assert_matches(c, folder)

"""Settings of config.json and of a plain Hugging Face folder that transformers and sentence-transformers honour
beyond the module configs, one at a time against them: a causal-LM architecture's pooling, a chat template,
``is_causal``, BERT's names in a DistilBERT config, weights stored in mixed dtypes, a module config's
``torch_dtype``, RoBERTa's token types, ``is_decoder`` where it is read, settings that change how transformers
builds the model, legacy tensor names, and values that fail only later in transformers. Folders are built as in
``tests/test_folder_settings.py``.
"""

from __future__ import annotations

import pytest
import torch

from minibert import SentenceEncoder

from differential import assert_matches, compare, edit, folder_of
from folder_forms import edit_tensors

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
    c, folder = folder_of(tmp_path, "bert", dtype="drop")
    other = torch.float32 if first == "bfloat16" else torch.bfloat16
    edit_tensors(folder / "model.safetensors", lambda tensors: {
        name: t.to(getattr(torch, first) if name == min(tensors) else other) for name, t in tensors.items()})
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


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("key, value", [("is_causal", True), ("quantization_config", {"bits": 8}),
                                        ("position_embedding_type", "relative_key")])
def test_config_kwargs_transformers_config_lacks_count_only_where_config_json_holds_them(tmp_path, family, key,
                                                                                          value):
    """transformers sets a module config's config_kwargs only where its config object has the attribute: is_causal,
    quantization_config and position_embedding_type it has only when config.json sets them, so without that they
    are dropped."""
    c, folder = folder_of(tmp_path, family, sentences=[0, 1, 2, 3])
    edit(folder / "sentence_bert_config.json", config_kwargs={key: value})
    assert not hasattr(transformers.AutoConfig.from_pretrained(str(folder), **{key: value}), key)
    assert_matches(c, folder)
    held = {"is_causal": False, "quantization_config": {}, "position_embedding_type": "absolute"}[key]
    edit(folder / "config.json", **{key: held})  # now config.json holds it: set
    assert getattr(transformers.AutoConfig.from_pretrained(str(folder), **{key: value}), key) == value
    with pytest.raises(ValueError, match=f"{key}.* is not supported by minibert"):
        SentenceEncoder.from_pretrained(folder)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet"])
def test_config_json_types_are_checked_as_transformers_declares_them(family):
    """minibert's table of config.json's types is the one transformers' config class of the family declares
    (and checks strictly), key for key."""
    from minibert.families import FAMILIES

    theirs = type(transformers.AutoConfig.for_model(family))
    declared = {k: t.__name__ if isinstance(t, type) else str(t) for k, t in theirs.__annotations__.items()
                if not k.startswith("_")}
    assert FAMILIES[family].config_class.hf_types == declared


CONFIG_VALUES = [  # (setting, whether transformers runs it)
    ({"layer_norm_eps": 1}, False), ({"initializer_range": 0}, False), ({"use_cache": 1}, False),
    ({"tie_word_embeddings": 0}, False), ({"eos_token_id": [2, 3.0]}, False), ({"eos_token_id": [2, 3]}, True),
    ({"hidden_dropout_prob": 1.0}, True), ({"attention_probs_dropout_prob": 0}, True),
    ({"layer_norm_eps": 0.0}, True), ({"initializer_range": -0.02}, True)]
DISTILBERT_NAMES = {"hidden_dropout_prob": "dropout", "attention_probs_dropout_prob": "attention_dropout",
                    "use_cache": "sinusoidal_pos_embds"}  # (and no layer_norm_eps: DistilBERT's is fixed)


@pytest.mark.parametrize("family, setting, runs", [
    *(("bert", setting, runs) for setting, runs in CONFIG_VALUES),
    *(("mpnet", setting, runs or "use_cache" in setting) for setting, runs in CONFIG_VALUES),  # (it has no use_cache)
    *(("distilbert", {DISTILBERT_NAMES.get(k, k): v for k, v in setting.items()}, runs)
      for setting, runs in CONFIG_VALUES if "layer_norm_eps" not in setting)])
def test_config_values_run_and_fail_where_transformers_does(tmp_path, family, setting, runs):
    """transformers refuses a config.json value of another type than its config class declares (an int where it
    declares a float, ...), whether the model reads the key or not; and it loads a checkpoint whose dropout is 1,
    whose LayerNorm eps is 0 or whose initializer_range is negative (read only to draw random weights)."""
    c, folder = folder_of(tmp_path, family, sentences=[0, 1, 2, 3])  # (within MPNet's positions)
    edit(folder / "config.json", **setting)
    outcome = compare(c, folder)
    assert outcome.kind == ("match" if runs else "both"), outcome.detail
    if not runs:
        with pytest.raises(ValueError, match=f"{next(iter(setting))} must be .* \\(as transformers declares it"):
            SentenceEncoder.from_pretrained(folder)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_a_whole_number_set_where_transformers_declares_a_float_is_written_as_a_float(tmp_path, family):
    from minibert.families import FAMILIES

    config = FAMILIES[family].config_class(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=20, layer_norm_eps=1, initializer_range=0)
    config.save_json(tmp_path / "config.json")
    read = transformers.AutoConfig.from_pretrained(str(tmp_path))  # (it refuses an int where it declares a float)
    assert type(read.initializer_range) is float and read.initializer_range == 0.0
    assert type(config).from_json(tmp_path / "config.json").initializer_range == 0.0


@pytest.mark.parametrize("where", ["config.json", "config_kwargs"])
def test_config_json_and_config_kwargs_are_type_checked_each_on_its_own(tmp_path, where):
    """transformers checks config.json's values as it builds the config and config_kwargs' as it sets them: a bad
    one in either is refused, even where the other source overrides it."""
    c, folder = folder_of(tmp_path, "bert", sentences=[0, 1, 2, 3])
    bad, good = {"layer_norm_eps": 1}, {"layer_norm_eps": 1e-5}
    edit(folder / "config.json", **(bad if where == "config.json" else good))
    edit(folder / "sentence_bert_config.json", config_kwargs=good if where == "config.json" else bad)
    source = "config.json" if where == "config.json" else "folder/st: its module config's config_kwargs"
    with pytest.raises(ValueError, match=f"{source}: layer_norm_eps must be float"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "both"


@pytest.mark.parametrize("family", ["bert", "mpnet", "distilbert"])
def test_a_negative_initializer_range_fails_where_transformers_draws_a_missing_pooler(tmp_path, family):
    c, folder = folder_of(tmp_path, family, sentences=[0, 1, 2, 3])
    edit(folder / "config.json", initializer_range=-0.02)
    edit_tensors(folder / "model.safetensors", lambda tensors: {k: t for k, t in tensors.items() if "pooler" not in k})
    if family == "distilbert":  # (no pooler to draw)
        assert_matches(c, folder)
        return
    with pytest.raises(ValueError, match="config.json: initializer_range must be >= 0 to draw the pooler the "
                                         "checkpoint lacks, as transformers does, got -0.02"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "both"


@pytest.mark.parametrize("sinusoidal", [True, False])
def test_a_distilbert_checkpoint_without_its_sinusoidal_table_gets_it_computed(tmp_path, sinusoidal):
    """transformers computes DistilBERT's sinusoidal position table where the checkpoint lacks it; a learnt table
    it would draw at random, which minibert refuses."""
    c, folder = folder_of(tmp_path, "distilbert", sentences=[0, 1, 2, 3])
    edit(folder / "config.json", sinusoidal_pos_embds=sinusoidal)
    edit_tensors(folder / "model.safetensors", lambda tensors: {k: t for k, t in tensors.items()
                                                               if k != "embeddings.position_embeddings.weight"})
    if not sinusoidal:
        with pytest.raises(ValueError, match="missing 1 tensors: embeddings.position_embeddings.weight"):
            SentenceEncoder.from_pretrained(folder)
        return
    assert_matches(c, folder)
    report = SentenceEncoder.from_pretrained(folder).bert.load_report
    assert report.computed == ["embeddings.position_embeddings.weight"] and "computed 1 fixed tensors" in str(report)


def test_random_weights_are_not_drawn_from_a_negative_initializer_range():
    from minibert import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=20, initializer_range=-0.02)
    with pytest.raises(ValueError, match="initializer_range must be >= 0 to draw random weights, got -0.02"):
        BertModel(config)


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


@pytest.mark.parametrize("name", ["config_kwargs", "config_args"])
def test_a_module_config_s_torch_dtype_is_the_dtype(tmp_path, name):
    """transformers sets a module config's config_kwargs once config.json is read, and setting the older torch_dtype
    sets dtype: over config.json's dtype, it is the dtype the model runs in; a null one names none, over a
    config.json that names one under either key (the weights' own dtype then)."""
    import json

    c, folder = folder_of(tmp_path, "bert")
    assert transformers.AutoConfig.from_pretrained(str(folder)).dtype == torch.float32  # (config.json's "dtype")
    edit(folder / "sentence_bert_config.json", **{name: {"torch_dtype": "bfloat16"}})
    assert next(SentenceEncoder.from_pretrained(folder).parameters()).dtype == torch.bfloat16
    assert next(st.SentenceTransformer(str(folder), device="cpu").parameters()).dtype == torch.bfloat16
    assert_matches(c, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["dtype"]
    config["torch_dtype"] = "bfloat16"  # only the older key, as transformers 4 wrote it
    (folder / "config.json").write_text(json.dumps(config))
    edit(folder / "sentence_bert_config.json", **{name: {"dtype": None}})
    assert next(SentenceEncoder.from_pretrained(folder).parameters()).dtype == torch.float32  # the weights' own
    assert_matches(c, folder)


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("family", ["roberta", "xlm-roberta"])
def test_roberta_embeds_the_token_types_it_is_given(tmp_path, family, path):
    """RoBERTa's released checkpoints have one token type and tokenizers that give none, but transformers embeds
    the types it is given (a folder whose tokenizer lists token_type_ids, with type_vocab_size 2), as BERT does."""
    from minibert.families import load_model
    from minibert.paths import convert

    config = transformers.AutoConfig.for_model(family, vocab_size=60, hidden_size=16, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=24, type_vocab_size=2,
                                               max_position_embeddings=40)
    torch.manual_seed(0)
    theirs = transformers.AutoModel.from_config(config).eval()
    theirs.save_pretrained(str(tmp_path))
    ids = torch.tensor([[0, 5, 6, 2, 2, 7, 8, 2], [0, 9, 2, 2, 10, 2, 1, 1]])
    mask, types = ids.ne(1).long(), torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 0, 0]])
    ours = convert(load_model(tmp_path), path).eval()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(ids, mask, types).last_hidden_state
        assert (expected - theirs(input_ids=ids, attention_mask=mask).last_hidden_state).abs().max() > 0.1
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet"])
def test_is_decoder_is_refused_only_where_transformers_reads_it(tmp_path, family):
    """BERT (and RoBERTa) as a decoder attend causally and across; DistilBERT's and MPNet's models never read
    is_decoder or add_cross_attention."""
    c, folder = folder_of(tmp_path, family)
    edit(folder / "config.json", is_decoder=True, add_cross_attention=True)
    if family == "bert":
        with pytest.raises(ValueError, match="is_decoder=True is not supported"):
            SentenceEncoder.from_pretrained(folder)
        return
    assert_matches(c, folder)


@pytest.mark.parametrize("key", ["quantization_config", "per_layer_config"])
def test_settings_that_change_how_transformers_builds_the_model_are_refused(tmp_path, key):
    c, folder = folder_of(tmp_path, "bert")
    edit(folder / "config.json", **{key: {"quant_method": "bitsandbytes", "load_in_8bit": True}
                                    if key == "quantization_config" else {"0": {"hidden_act": "relu"}}})
    with pytest.raises(ValueError, match=f"config.json: {key} is not supported by minibert"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "both"  # (here transformers fails too: no bitsandbytes; no such layers)


def test_legacy_tensor_names_and_buffers_load_as_transformers_loads_them(tmp_path):
    """TensorFlow-era checkpoints name LayerNorm's tensors gamma and beta, and older transformers saved the
    embeddings' token_type_ids buffer: transformers renames the one and ignores the other."""
    from safetensors.torch import load_file

    from folder_forms import legacy_names

    c, folder = folder_of(tmp_path, "roberta")  # (its tokenizer gives no token types: a stored buffer would be read)
    weights = folder / "model.safetensors"
    norm = load_file(weights)["embeddings.LayerNorm.weight"]
    legacy_names(weights)
    renamed = load_file(weights)
    assert any(k.endswith("LayerNorm.gamma") for k in renamed) and not any(k.endswith("LayerNorm.weight")
                                                                           for k in renamed)
    # (type 1: not the types it runs)
    edit_tensors(weights, lambda tensors: {**tensors, "embeddings.token_type_ids": torch.ones(1, 64, dtype=torch.long)})
    assert_matches(c, folder)
    edit_tensors(weights, lambda tensors: {**tensors, "embeddings.LayerNorm.weight": norm.clone()})
    with pytest.raises(ValueError, match="tensors 'embeddings.LayerNorm.gamma' and 'embeddings.LayerNorm.weight' "
                                         "are both 'embeddings.LayerNorm.weight'"):
        SentenceEncoder.from_pretrained(folder)


def test_config_values_that_fail_later_in_transformers_are_refused_as_the_folder_loads():
    """An MPNet bucket table smaller than the 32 buckets relative positions fall in fails at the first long enough
    input; a RoBERTa pad_token_id that leaves no position fails as the model is built. Both name the key."""
    from minibert.families import MPNetConfig, RobertaConfig

    small = {"vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 24, "max_position_embeddings": 66}
    model = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(
        "mpnet", relative_attention_num_buckets=24, **small)).eval()
    model(input_ids=torch.tensor([[0, 5, 6, 2]]))  # short inputs run
    with pytest.raises(IndexError):
        model(input_ids=torch.tensor([[0, *range(5, 25), 2]]))
    with pytest.raises(ValueError, match=r"relative_attention_num_buckets must be at least 32 \(the buckets "
                                         r"relative positions fall in\), got 24"):
        MPNetConfig.from_dict({**small, "model_type": "mpnet", "relative_attention_num_buckets": 24})
    with pytest.raises(AssertionError):
        transformers.AutoModel.from_config(transformers.AutoConfig.for_model("roberta", pad_token_id=66, **small))
    for pad in (65, 66):  # (64 leaves one position: a one-token input runs)
        with pytest.raises(ValueError, match=f"RobertaConfig.pad_token_id {pad} leaves no position"):
            RobertaConfig.from_dict({**small, "model_type": "roberta", "pad_token_id": pad})


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet", "roberta"])
def test_a_null_or_negative_pad_token_id_runs_where_transformers_runs_it(tmp_path, family):
    """BERT's and DistilBERT's pad_token_id only marks the word embeddings' padding row (no gradient; a negative
    one counts from the end, as nn.Embedding takes it), and MPNet fixes its own: transformers runs them with a null
    or negative one, or any other. RoBERTa counts positions from it + 1: -1 matches no token (positions 0, 1, ...),
    and a null one fails in transformers too."""
    for pad in (None, -1, 10 ** 6):
        if pad == 10 ** 6 and family != "mpnet":
            continue
        c, folder = folder_of(tmp_path / str(pad), family)
        edit(folder / "config.json", pad_token_id=pad)
        if family == "roberta" and pad is None:
            assert compare(c, folder).kind == "both"
            continue
        assert_matches(c, folder)

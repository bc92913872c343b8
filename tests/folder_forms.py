"""The older and rarer forms of a folder that sentence-transformers and transformers still read, written over
a freshly saved one (tests/folders.py): vocabulary files instead of tokenizer.json, the module and pooling
configs of earlier versions, settings left out or changed by hand."""

from __future__ import annotations

import json
from pathlib import Path


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    result = change(data)  # changes data in place (returning whatever), or returns new contents
    data = result if isinstance(result, (dict, list)) else data
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def edit_tensors(path: Path, change) -> None:
    """A safetensors file rewritten with ``change(tensors)``'s tensors (name -> tensor), as transformers saves one."""
    from safetensors.torch import load_file, save_file

    save_file(change(load_file(path)), path, metadata={"format": "pt"})


def mixed_dtypes(path: Path) -> None:
    """The checkpoint's first tensor in name order stored in bfloat16, the others in float32, or the reverse."""
    import torch

    def mix(tensors: dict) -> dict:
        first = min(tensors)
        flip = tensors[first].dtype == torch.float32
        return {name: t.to(torch.bfloat16 if (name == first) == flip else torch.float32) for name, t in tensors.items()}

    edit_tensors(path, mix)


def legacy_names(path: Path) -> None:
    """LayerNorm's tensors under their TensorFlow-era names, gamma and beta, which transformers renames."""
    edit_tensors(path, lambda tensors: {k.replace("LayerNorm.weight", "LayerNorm.gamma")
                                        .replace("LayerNorm.bias", "LayerNorm.beta"): t for k, t in tensors.items()})


def rewrite(c: dict, folder: Path) -> None:
    """The older forms and the settings left out or changed by hand."""
    config, tok_config = folder / "config.json", folder / "tokenizer_config.json"
    edit_json(config, lambda d: d.update(dtype=c["dtype"]) if c["dtype"] != "drop" else d.pop("dtype", None))
    if c["eps"] != "drop" and c["family"] != "distilbert":
        edit_json(config, lambda d: d.update(layer_norm_eps=c["eps"]))
    elif c["eps"] == "drop":
        edit_json(config, lambda d: d.pop("layer_norm_eps", None))
    if c["act"] == "prelu":
        edit_json(config, lambda d: d.update({"activation" if c["family"] == "distilbert" else "hidden_act": "prelu"}))
    if c["drop_model_type"]:
        edit_json(config, lambda d: d.pop("model_type"))
    if c["causal"]:  # made for causal LM: sentence-transformers pools a plain folder's last token
        edit_json(config, lambda d: d.update(architectures=[d["architectures"][0].replace("Model", "ForCausalLM")],
                                             **({} if c["is_causal"] is None else {"is_causal": c["is_causal"]})))
    if c["bert_names"] and c["family"] == "distilbert":  # transformers reads some of BERT's names, not others
        edit_json(config, lambda d: d.update(hidden_act="relu", intermediate_size=d["hidden_dim"] + 8,
                                             num_attention_heads=d["n_heads"] // 2, n_heads=d["n_heads"]))
    if c["mixed_dtype"] and c["dtype"] == "drop":  # the first tensor in name order decides transformers' dtype
        mixed_dtypes(folder / "model.safetensors")
    if c["pad"]:  # BERT's, DistilBERT's and MPNet's marks only a padding row; RoBERTa counts positions from it
        edit_json(config, lambda d: d.update(pad_token_id=None if c["pad"] == "null" else -1))
    if c["legacy_names"]:
        legacy_names(folder / "model.safetensors")
    template = "{% for m in messages %}says: {{ m['content'] }}{% endfor %}"
    if c["chat_template"] == "jinja":
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    elif c["chat_template"]:
        edit_json(tok_config, lambda d: d.update(chat_template=template))
    if c["lower"] == "drop":
        edit_json(tok_config, lambda d: d.pop("do_lower_case", None))
    edit_json(tok_config, lambda d: d.update(model_max_length=c["tokenizer_max"]) if c["tokenizer_max"]
              else d.pop("model_max_length", None))
    if c["prefix_space"] is None:
        edit_json(tok_config, lambda d: d.pop("add_prefix_space", None))
    if c["padding_side"] == "left":
        edit_json(tok_config, lambda d: d.update(padding_side="left"))
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if c["files"] == "vocab":  # the files of transformers 4's slow tokenizers, no tokenizer.json
        model = data["model"]
        if model["type"] == "WordPiece":
            (folder / "vocab.txt").write_text("\n".join(sorted(model["vocab"], key=model["vocab"].get)) + "\n",
                                              encoding="utf-8")
        else:
            (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
            merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
            (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        (folder / "tokenizer.json").unlink()
    elif c["files"] == "no_tokenizer_config":
        tok_config.unlink()
    elif c["files"] == "special_tokens_map":
        keys = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
        old = json.loads(tok_config.read_text(encoding="utf-8"))
        tokens = {k: {"content": old[k], "lstrip": k == "mask_token", "normalized": False, "rstrip": False,
                      "single_word": False} for k in keys if k in old}
        (folder / "special_tokens_map.json").write_text(json.dumps(tokens))
    elif c["files"] == "verbatim":
        edit_json(tok_config, lambda d: d.update(tokenizer_class="PreTrainedTokenizerFast"))
    elif c["files"] == "no_tokenizer_class":
        edit_json(tok_config, lambda d: d.pop("tokenizer_class"))
    elif c["files"] == "added_tokens_decoder":  # transformers 4 wrote the added tokens into the config
        edit_json(tok_config, lambda d: d.update(added_tokens_decoder={
            str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in data["added_tokens"]}))
    elif c["files"] == "token_dicts":  # older still: each special token as an AddedToken's fields
        edit_json(tok_config, lambda d: d.update({k: {"__type": "AddedToken", "content": v, "lstrip": False,
                                                      "normalized": False, "rstrip": False, "single_word": False}
                                                  for k, v in d.items() if k.endswith("_token")}))
    elif c["files"] == "json_sides":  # tokenizer.json saved with padding and truncation on the left
        data["padding"] = {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": None, "pad_id": 0,
                           "pad_type_id": 0, "pad_token": "[PAD]"}
        data["truncation"] = {"direction": "Left", "max_length": 16, "strategy": "LongestFirst", "stride": 0}
        (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        if c["truncation_side"] == "left":  # the config's side wins over the file's
            edit_json(tok_config, lambda d: d.update(padding_side="right"))
    elif c["files"] == "json_lowercase" and data["normalizer"] and data["normalizer"].get("type") == "BertNormalizer":
        data["normalizer"]["lowercase"] = True  # tokenizer.json lowercases, tokenizer_config.json may say not to
        (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    module_config = folder / "sentence_bert_config.json"
    form = c["module_form"]
    if form in ("old", "old_renamed", "tokenizer_args"):
        old = {"max_seq_length": c["st_max"], "do_lower_case": c["st_lower"]}
        if form == "tokenizer_args":
            old["tokenizer_args"] = {"do_lower_case": c["lower"] is True}
        module_config.write_text(json.dumps(old))
    elif form == "model_args":
        edit_json(module_config, lambda d: d.update(model_args={"torch_dtype": "bfloat16"}))
    elif form == "config_args":  # (an older torch_dtype there is the dtype, over config.json's dtype)
        over = {"layer_norm_eps": 1e-3, **({"torch_dtype": "bfloat16"} if c["config_args_dtype"] else {})}
        # a setting transformers' config lacks unless config.json holds it: dropped there, else set
        unset = {"is_causal": True, "quantization_config": {"bits": 8}, "position_embedding_type": "relative_key"}
        over |= {c["config_args_unset"]: unset[c["config_args_unset"]]} if c["config_args_unset"] else {}
        edit_json(module_config, lambda d: d.update(config_args=over))
    if form == "old_renamed" and c["family"] in ("roberta", "distilbert", "xlm-roberta"):
        module_config.rename(folder / f"sentence_{c['family']}_config.json")
    elif form == "no_modules":
        (folder / "modules.json").unlink()
    for i, (_, act, _, _) in enumerate(c["dense"]):
        if act.startswith("mypackage"):  # a class outside torch, which sentence-transformers will not import
            edit_json(folder / f"{i + 2}_Dense" / "config.json", lambda d, a=act: d.update(activation_function=a))
    if c["old_class_names"] and (folder / "modules.json").is_file():  # what sentence-transformers 2 to 5 wrote
        edit_json(folder / "modules.json", lambda d: [{**m, "type": "sentence_transformers.models." +
                                                        m["type"].rsplit(".", 1)[1]} for m in d])
    st_config = folder / "config_sentence_transformers.json"
    if c["st_config_form"] == "v2":
        edit_json(st_config, lambda d: {"__version__": {"sentence_transformers": "2.2.2"},
                                        **({"prompts": d["prompts"]} if any(d["prompts"].values()) else {})})
    elif c["st_config_form"] == "bad_similarity":
        edit_json(st_config, lambda d: d.update(similarity_fn_name="dot_product"))
    if c["legacy_pooling"]:
        names = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
                 "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                 "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
        edit_json(folder / "1_Pooling" / "config.json", lambda d: {
            "word_embedding_dimension": d["embedding_dimension"], "include_prompt": d.get("include_prompt", True),
            **{key: mode in c["pooling"] for mode, key in names.items()}})
        if c["pooling"] != [m for m in names if m in c["pooling"]]:  # the legacy form has a fixed order
            c["pooling_order_changed"] = True
    rare_tokenizer_form(c["rare_tokenizer_form"], folder)
    if c["transformer_subfolder"] and (folder / "modules.json").is_file():
        in_subfolder(folder, "0_Transformer")


def in_subfolder(folder: Path, name: str) -> None:
    """The Transformer module's files moved into a subfolder of their own, as older sentence-transformers folders
    (and hand-made ones) hold them; the other modules and the folder's own files stay where they are."""
    modules = json.loads((folder / "modules.json").read_text())
    kept = {"modules.json", "config_sentence_transformers.json", "README.md", *(m["path"] for m in modules)}
    (folder / name).mkdir()
    for entry in list(folder.iterdir()):
        if entry.name not in kept and entry.name != name:
            entry.rename(folder / name / entry.name)
    for module in modules:
        if module["type"].endswith("Transformer"):
            module["path"] = name
    (folder / "modules.json").write_text(json.dumps(modules))


def rare_tokenizer_form(form: str | None, folder: Path) -> None:
    """Tokenizer files as few folders hold them: the tokenizer class named in config.json only, the length limit
    under its legacy name ``max_len``, or special_tokens_map.json without a tokenizer_config.json."""
    tok_config = folder / "tokenizer_config.json"
    if form is None or not tok_config.is_file():
        return
    settings = json.loads(tok_config.read_text(encoding="utf-8"))
    if form == "class_in_config" and "tokenizer_class" in settings:
        edit_json(folder / "config.json", lambda d: d.update(tokenizer_class=settings.pop("tokenizer_class")))
    elif form == "max_len" and "model_max_length" in settings:
        settings["max_len"] = settings.pop("model_max_length")
    elif form == "map_only":
        keys = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
        edit_json(folder / "special_tokens_map.json", lambda d: d.update({k: settings[k] for k in keys
                                                                           if isinstance(settings.get(k), str)}))
        tok_config.unlink()
        return
    tok_config.write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")

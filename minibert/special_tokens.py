"""Which tokens of a tokenizer are special, and the order they are added in, as transformers 5 reads them.

A special token (``[CLS]``, ``<s>``, ``[MASK]``, ...) written in the text stays one token: it is matched before
the normaliser and the pre-tokenizer see the text. Where each comes from, in order of precedence:

1. ``tokenizer_config.json``'s ``bos_token`` ... ``mask_token`` (a string, or {"content": ..., "lstrip": ...}),
   else the tokenizer class's defaults;
2. in a folder whose tokenizer_config.json lists no ``added_tokens_decoder`` (written before transformers 4.34),
   ``special_tokens_map.json`` over them, and the added tokens of ``added_tokens.json`` and tokenizer.json;
3. a named token that is also an added token takes the added token's flags (MPNet's ``<mask>`` takes the space
   before it, for one).

They are added to the vocabulary in index order, then every named one not among them: a token the vocabulary
holds keeps its id, any other gets the next one.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from minibert.files import json_object

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def as_token(value, where: str, typed: bool = False) -> str | AddedToken | None:
    """A special token as the files write it: a string, {"content": ...} or null. ``typed``: a dict must say
    ``"__type": "AddedToken"`` (what tokenizer_config.json's own keys hold; transformers refuses other dicts)."""
    if value is None or isinstance(value, (str, AddedToken)):
        return value
    flags = ("lstrip", "rstrip", "single_word", "normalized", "special")
    fields_ok = isinstance(value, dict) and isinstance(value.get("content"), str) and all(
        isinstance(value.get(f, False), bool) for f in flags)
    if fields_ok and (not typed or value.get("__type") == "AddedToken"):
        return AddedToken(value["content"], **{f: value[f] for f in flags if f in value})
    raise ValueError(f"{where}: expected a token (a string or {{\"content\": ...}}), got {value!r:.80}")


def token_list(value, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of tokens, got {value!r:.80}")
    return [as_token(t, where) for t in value]


def read_special_tokens(folder: Path, raw: dict, overrides: dict, defaults: dict,
                        tokenizer_json: dict) -> tuple[dict, list, dict]:
    """(named special tokens, extra special tokens, added tokens by index), read as transformers reads them:
    ``raw`` is tokenizer_config.json, ``overrides`` what the caller lays over it (a sentence-transformers
    folder's processor_kwargs), which special_tokens_map.json does not override."""
    config_path = folder / "tokenizer_config.json"
    settings = {**raw, **overrides}
    if "additional_special_tokens" in settings and not settings.get("extra_special_tokens"):
        settings["extra_special_tokens"] = settings.pop("additional_special_tokens")
    own = settings.pop("extra_special_tokens") if isinstance(settings.get("extra_special_tokens"), dict) else {}
    added: dict[int, AddedToken] = {}
    if "added_tokens_decoder" in settings:
        entries = settings["added_tokens_decoder"]
        if not isinstance(entries, dict) or not all(str(k).isdigit() for k in entries):
            raise ValueError(f"{config_path}: added_tokens_decoder must map ids to tokens, got {entries!r:.80}")
        for index, token in entries.items():
            added[int(index)] = as_token(token, f"{config_path}: added_tokens_decoder[{index}]")
    else:  # older folders: special_tokens_map.json over tokenizer_config.json, then the files' added tokens
        path = folder / "special_tokens_map.json"
        for key, value in json_object(path).items():
            if overrides.get(key):
                continue
            if key == "extra_special_tokens":
                old = token_list(settings.get("extra_special_tokens"), f"{config_path}: extra_special_tokens")
                settings[key] = old + [t for t in token_list(value, f"{path}: {key}") if t not in old]
            elif isinstance(value, dict):
                token = as_token(value, f"{path}: {key}")
                token.special = True
                settings[key] = token
            else:
                settings[key] = value
        special = {str(settings[k]) for k in SPECIAL_KEYS if settings.get(k)} | \
            {str(t) for t in token_list(settings.get("extra_special_tokens"), f"{config_path}: extra_special_tokens")}
        path = folder / "added_tokens.json"
        for content, index in json_object(path).items():
            if type(index) is not int:
                raise ValueError(f"{path}: {content!r} must map to an id, got {index!r}")
            added[index] = AddedToken(content, normalized=content not in special, special=content in special)
        entries, path = tokenizer_json.get("added_tokens") or [], folder / "tokenizer.json"
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict) or type(entry.get("id")) is not int:
                raise ValueError(f"{path}: added_tokens holds {entry!r:.80}, not a token with an id")
            added[entry["id"]] = as_token({k: v for k, v in entry.items() if k != "id"}, f"{path}: added_tokens")
    if "additional_special_tokens" in settings and "extra_special_tokens" not in settings:
        settings["extra_special_tokens"] = settings.pop("additional_special_tokens")
    extra = token_list(settings.get("extra_special_tokens"), f"{config_path}: extra_special_tokens")
    # any other "..._token" setting (a string, or an AddedToken's fields) names a special token of the model's own
    own |= {k: v for k, v in settings.items() if k.endswith("_token") and k not in SPECIAL_KEYS
            and (isinstance(v, (str, AddedToken)) or isinstance(v, dict) and v.get("__type") == "AddedToken")}
    by_content = {str(t): t for t in added.values()}
    named = {}
    for key in [*SPECIAL_KEYS, *own]:
        value = own[key] if key in own else settings[key] if key in settings else defaults.get(key)
        token = as_token(value, f"{config_path}: {key}", typed=key in raw or key in overrides)
        named[key] = by_content.get(str(token), token) if token is not None else None
    return named, extra, added


def add_tokens(backend: Backend, name: str, named: dict, extra: list, added: dict) -> None:
    """The added tokens in index order, then every special token not among them (its vocabulary id when it has
    one, else the next free id), as transformers adds them."""
    if name == "MPNetTokenizer":  # MPNet wraps its string tokens; its mask token takes the space before it
        named = {k: AddedToken(v, lstrip=k == "mask_token", rstrip=False) if isinstance(v, str) else v
                 for k, v in named.items()}
    tokens = [token for _, token in sorted(added.items())]
    contents = {str(t) for t in tokens}
    for token in [*named.values(), *extra]:
        if token is not None and str(token) not in contents:
            tokens.append(token)
            contents.add(str(token))
    all_named = {str(t) for t in named.values() if t}
    for i, token in enumerate(tokens):
        if isinstance(token, str):
            tokens[i] = AddedToken(token, special=True)
        elif not token.special and str(token) in all_named:
            token.special = True
    backend.add_tokens(tokens)

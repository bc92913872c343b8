"""Tokenizer settings as sentence-transformers reads them, beyond transformers' own tokenizer files: the class
AutoProcessor builds, a null limit in the module config's tokenizer arguments, a null unknown token. One at a
time against the references, on folders built as in ``tests/test_folder_settings.py``.
"""

from __future__ import annotations

import pytest

from minibert import SentenceEncoder

from differential import assert_matches, compare, edit, folder_of

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
transformers = pytest.importorskip("transformers", reason="transformers builds the folders")


@pytest.mark.parametrize("where, value", [("tokenizer_config.json", "BertTokenizerFast"),
                                          ("tokenizer_config.json", "PreTrainedTokenizerFast"),
                                          ("config.json", "PreTrainedTokenizerFast")])
def test_a_processor_class_that_builds_another_tokenizer_is_refused(tmp_path, where, value):
    """sentence-transformers builds the class processor_class names (AutoProcessor); where that tokenizer is
    another than tokenizer_class's (here one that runs tokenizer.json as it is, lowercasing, against BERT's
    rebuilt one that keeps case), the ids differ from transformers' AutoTokenizer: refused."""
    c, folder = folder_of(tmp_path, "bert", lower=False, files="json_lowercase", sentences=[0, 1, 5])
    edit(folder / where, processor_class=value)
    texts = ["Hello WORLD, this Is MiXeD case!"]
    theirs = st.SentenceTransformer(str(folder), device="cpu").tokenize(texts)["input_ids"].tolist()
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))(texts)["input_ids"]
    if value == "BertTokenizerFast":  # the class tokenizer_class names: the same tokenizer
        assert theirs == auto
        assert_matches(c, folder)
        return
    assert theirs != auto
    with pytest.raises(ValueError, match=f"{where}: processor_class '{value}'"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "refused"


def test_a_null_model_max_length_in_processor_kwargs_leaves_max_seq_length_unread(tmp_path):
    """sentence-transformers sets max_seq_length only where processor_kwargs has no model_max_length at all; a
    null one is transformers' default, no limit (the model's positions, 64 here, still cut)."""
    c, folder = folder_of(tmp_path, "bert", module_form="old", st_max=8, sentences=[0, 1, 4, 5, 6])
    edit(folder / "sentence_bert_config.json", processor_kwargs={"model_max_length": None})
    with pytest.warns(UserWarning, match="model_max_length .* exceeds the 64 tokens"):
        assert SentenceEncoder.from_pretrained(folder).tokenizer.max_length == 64
    assert_matches(c, folder)


def test_a_null_unk_token_is_refused_where_wordpiece_fails_on_unknown_words(tmp_path):
    c, folder = folder_of(tmp_path, "bert")
    edit(folder / "tokenizer_config.json", unk_token=None)
    with pytest.raises(ValueError, match="unk_token is null"):
        SentenceEncoder.from_pretrained(folder)
    assert compare(c, folder).kind == "both"  # sentence-transformers fails on a word outside the vocabulary


def test_vocab_txt_lines_keep_what_the_tokenizers_library_does_not_trim(tmp_path):
    """The tokenizers library trims Unicode's whitespace from a vocab.txt line, not the separators U+001C to
    U+001F that Python's rstrip() also drops: a token written "music\\x1c" is not "music"."""
    c, folder = folder_of(tmp_path, "bert", files="vocab", sentences=[0, 1, 11])
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines = [line + "\x1c" if line == "music" else line + " \u3000" if line == "crowd" else line for line in lines]
    (folder / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    texts = ["Someone plays music for the crowd"]
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))(texts)["input_ids"]
    assert SentenceEncoder.from_pretrained(folder).tokenizer(texts).input_ids.tolist() == theirs
    assert_matches(c, folder)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_null_tokenizer_class_is_the_model_type_s(tmp_path, family):
    c, folder = folder_of(tmp_path, family, sentences=[0, 1, 4, 5, 6])
    edit(folder / "tokenizer_config.json", tokenizer_class=None)
    assert_matches(c, folder)

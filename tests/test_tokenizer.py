"""Tokenization: tokenizer.json, the vocab.txt-only fallback, truncation, pairs and word ids."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from minibert import Tokenizer

transformers = pytest.importorskip("transformers", reason="transformers' tokenizer is the reference")

TRICKY = ["Héllo, WORLD!", "naïve café résumé", "中文字符 mixed with English", "tab\there", "  spaces  ",
          "", "unaffable unbelievable antidisestablishmentarianism", "C++ & Rust: 2×faster?"]


def test_matches_transformers_tokenizer(minilm_dir, sentences):
    ours = Tokenizer.from_pretrained(minilm_dir)
    theirs = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    texts = sentences + TRICKY
    batch = ours(texts)
    ref = theirs(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    assert batch.input_ids.tolist() == ref["input_ids"].tolist()
    assert batch.attention_mask.tolist() == ref["attention_mask"].tolist()
    assert batch.token_type_ids.tolist() == ref["token_type_ids"].tolist()


def test_vocab_txt_only_folder_gives_the_same_ids(model_copy, sentences):
    folder = model_copy(skip=("tokenizer.json",))
    from_vocab = Tokenizer.from_pretrained(folder)
    from_json = Tokenizer.from_pretrained(model_copy("with-json"))
    texts = sentences + TRICKY
    assert from_vocab(texts).input_ids.tolist() == from_json(texts).input_ids.tolist()
    pairs = list(zip(texts, reversed(texts), strict=True))
    a, b = from_vocab(pairs), from_json(pairs)
    assert a.input_ids.tolist() == b.input_ids.tolist()
    assert a.token_type_ids.tolist() == b.token_type_ids.tolist()


def test_vocab_txt_honours_do_lower_case(model_copy):
    folder = model_copy(skip=("tokenizer.json",))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    cased = Tokenizer.from_pretrained(folder)  # do_lower_case: true in this model
    assert cased.backend.encode("HELLO").tokens == ["[CLS]", "hello", "[SEP]"]
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    uncased = Tokenizer.from_pretrained(folder)
    tokens = uncased.backend.encode("HELLO").tokens
    assert "hello" not in tokens  # the vocabulary is lower-case, so upper-case text falls apart
    ref = transformers.BertTokenizer(str(folder / "vocab.txt"), do_lower_case=False)
    assert uncased.backend.encode("HELLO World").ids == ref("HELLO World")["input_ids"]


def test_truncation_to_max_seq_length_with_one_warning(minilm_dir):
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert tok.max_length == 256  # sentence_bert_config.json, not the 512 positions
    long_text = "word " * 1000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = tok([long_text, "short", long_text])
    assert len(caught) == 1 and "2 input(s)" in str(caught[0].message) and "index 0" in str(caught[0].message)
    assert batch.input_ids.shape == (3, 256)
    assert batch.input_ids[0, -1].item() == tok.backend.token_to_id("[SEP]")


def test_changing_max_length_changes_the_truncation(minilm_dir):
    tok = Tokenizer.from_pretrained(minilm_dir)
    full = tok.backend.encode("word " * 100).ids
    tok.max_length = 16
    with pytest.warns(UserWarning, match="longer than 16 tokens"):
        ids = tok(["word " * 100]).input_ids[0].tolist()
    assert ids == full[:15] + [tok.backend.token_to_id("[SEP]")]
    with pytest.raises(ValueError, match="max_length"):
        tok.max_length = 1


def test_max_length_falls_back_to_max_position_embeddings(model_copy):
    folder = model_copy(skip=("sentence_bert_config.json",))
    assert Tokenizer.from_pretrained(folder).max_length == 512


def test_word_ids_map_pieces_to_words(minilm_dir):
    tok = Tokenizer.from_pretrained(minilm_dir)
    batch = tok([["Unaffable", "Johanson", "lives"], ["in", "Berlin"]], is_pretokenized=True)
    words = batch.word_ids[0]
    assert words[0] is None and words[-1] is None  # [CLS] ... [SEP]
    assert sorted({w for w in words if w is not None}) == [0, 1, 2]
    assert words.count(0) > 1  # "unaffable" is several pieces
    assert batch.word_ids[1][:4] == [None, 0, 1, None] and all(w is None for w in batch.word_ids[1][4:])


def test_duplicate_vocab_entry_names_the_line(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\n")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match=r"vocab.txt:6: duplicate token 'hello'"):
        Tokenizer.from_pretrained(tmp_path)


def test_sentence_bert_do_lower_case_lowers_the_text(model_copy, sentences):
    """sentence_bert_config's do_lower_case puts a Lowercase before the tokenizer's own normaliser, as
    sentence-transformers 6 does: special tokens written in the text stay special, and a final capital sigma
    becomes the plain small sigma (Python's str.lower would give the final form)."""
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
    from minibert import SentenceEncoder

    folder = model_copy()
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": True}))
    (folder / "tokenizer.json").unlink()  # vocab.txt with do_lower_case=false: only the sbert flag lowers
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    ours = SentenceEncoder.from_pretrained(folder)
    assert ours.tokenizer.do_lower_case and ours.tokenizer.max_length == 128
    assert "hello" in ours.tokenizer.encode(["HELLO"])[0].tokens  # lowered before the (cased) WordPiece
    greek = "\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u0399\u0391\u03a3"  # capital sigmas, two of them final
    texts = ["HELLO [SEP] World [MASK] [mask]", greek, *sentences]
    reference = st.SentenceTransformer(str(folder), device="cpu")
    ids = ours.tokenizer(texts[:2]).input_ids
    assert ids.tolist() == reference.preprocess(texts[:2])["input_ids"].tolist()
    assert ours.tokenizer.backend.token_to_id("[SEP]") in ids[0].tolist()  # still special: not lowercased
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


def test_do_lower_case_survives_save_and_reload(model_copy, tmp_path, sentences):
    """A model read with sentence_bert_config's do_lower_case: true keeps lowering after it is saved."""
    from minibert import SentenceEncoder
    from minibert.sentence import save_sentence_transformers_folder

    folder = model_copy()
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": True}))
    (folder / "tokenizer.json").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))
    original = SentenceEncoder.from_pretrained(folder)
    save_sentence_transformers_folder(original, tmp_path / "saved")
    reloaded = SentenceEncoder.from_pretrained(tmp_path / "saved")
    assert reloaded.tokenizer.do_lower_case
    texts = [s.upper() for s in sentences]
    np.testing.assert_array_equal(reloaded.encode(texts), original.encode(texts))


def test_special_tokens_written_in_the_text_match_the_reference(model_copy):
    """"[CLS] [SEP] [PAD]" in the text is three special tokens for tokenizer.json folders and for
    transformers' tokenizer built from vocab.txt; a vocab.txt-only folder must read it the same way."""
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the reference")
    from minibert import SentenceEncoder

    folder = model_copy(skip=("tokenizer.json",))
    texts = ["[CLS] [SEP] [PAD]", "hello [MASK] world [UNK]", "[cls] is lower case, so it is text"]
    ours = SentenceEncoder.from_pretrained(folder)
    with_json = Tokenizer.from_pretrained(model_copy("with-json"))
    assert ours.tokenizer(texts).input_ids.tolist() == with_json(texts).input_ids.tolist()
    assert ours.tokenizer.backend.encode(texts[0]).tokens == ["[CLS]", "[CLS]", "[SEP]", "[PAD]", "[SEP]"]
    reference = st.SentenceTransformer(str(folder), device="cpu")
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


@pytest.mark.parametrize("config, types", [
    ({}, True), ({"model_input_names": ["input_ids", "attention_mask"]}, False),
    ({"tokenizer_class": "DistilBertTokenizer"}, False), ({"tokenizer_class": "PreTrainedTokenizerFast"}, False),
    ({"tokenizer_class": "PreTrainedTokenizerFast",
      "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}, True)])
def test_a_pair_s_token_types_reach_the_model_only_where_model_input_names_lists_them(model_copy, config, types):
    """transformers' tokenizer gives token_type_ids only where model_input_names lists them (by default only
    BertTokenizer's does), and BERT reads zeros where it gets none: a pair's second segment is then type 0."""
    import torch

    transformers = pytest.importorskip("transformers", reason="transformers is the reference")
    from minibert import BertModel

    folder = model_copy()
    data = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(data | config))
    pairs = [("A man is playing a guitar.", "Someone plays music."), ("Short", "A longer second sentence here.")]
    ours = Tokenizer.from_pretrained(folder)
    batch = ours(pairs)
    assert bool(batch.token_type_ids.any()) == types
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))(
        [a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    assert ("token_type_ids" in theirs) == types
    assert batch.input_ids.tolist() == theirs["input_ids"].tolist()
    reference = transformers.AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        expected = reference(**theirs).last_hidden_state
        got = BertModel.from_pretrained(folder).eval()(batch.input_ids, batch.attention_mask,
                                                       batch.token_type_ids).last_hidden_state
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)
    saved = folder.parent / "saved"  # a tokenizer built in code keeps its token types through a save
    Tokenizer(ours.backend, ours.max_length, ours.pad_token, token_types=types).save(saved)
    reread = transformers.AutoTokenizer.from_pretrained(str(saved))(["a"], ["b"])
    assert ("token_type_ids" in reread) == types

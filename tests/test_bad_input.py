"""Bad input gets a clear error naming the culprit; edge cases give valid results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minibert import BertConfig, BertModel, SentenceEncoder, load_safetensors


def test_empty_list_gives_an_empty_matrix(minilm):
    out = minilm.encode([])
    assert isinstance(out, np.ndarray) and out.shape == (0, 384)
    assert minilm.encode([], convert_to="torch").shape == (0, 384)


def test_empty_and_whitespace_strings_embed(minilm):
    out = minilm.encode(["", "   ", "\t\n", "real text"])
    assert out.shape == (4, 384) and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # all become "[CLS] [SEP]"


def test_single_string_gives_a_vector(minilm):
    vec = minilm.encode("hello")
    np.testing.assert_allclose(vec, minilm.encode(["hello"])[0], atol=1e-7)
    assert vec.shape == (384,)


def test_results_come_back_in_input_order(minilm, sentences):
    together = minilm.encode(sentences, batch_size=3)
    one_by_one = np.stack([minilm.encode([s])[0] for s in sentences])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a", "list"]])
def test_non_string_is_a_type_error_naming_its_index(minilm, bad):
    with pytest.raises(TypeError, match=r"sentences\[2\]"):
        minilm.encode(["fine", "also fine", bad])


def test_bad_arguments(minilm):
    with pytest.raises(ValueError, match="batch_size"):
        minilm.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 'query'"):
        minilm.encode(["a"], batch_size="query")
    with pytest.raises(ValueError, match="convert_to"):
        minilm.encode(["a"], convert_to="list")
    with pytest.raises(TypeError, match="positional"):  # sentence-transformers' second argument is prompt_name
        minilm.encode(["a"], "query")
    with pytest.raises(ValueError, match=r"device must be one device, got \['cpu', 'cpu'\]"):
        minilm.encode(["a"], device=["cpu", "cpu"])
    with pytest.raises(ValueError, match=r"output_value must be one of .* got None"):
        minilm.encode(["a"], output_value=None)
    with pytest.raises(ValueError, match="token embeddings come as a list of tensors"):
        minilm.encode(["a"], output_value="token_embeddings", convert_to_tensor=True)
    with pytest.raises(ValueError, match=r"truncate_dim must be an integer in 1\.\.384, got 0"):
        minilm.encode(["a"], truncate_dim=0)


@pytest.mark.parametrize("bad", [{"text": "a dict"}, {"a", "set"}, None, 5, b"bytes", (s for s in ["gen"])],
                         ids=["dict", "set", "None", "int", "bytes", "generator"])
def test_texts_that_are_neither_a_string_nor_a_list_are_refused_by_type(minilm, bad):
    """sentence-transformers reads a dict as an input of another modality and refuses the others; a dict's keys or a
    set's items in their arbitrary order must not be embedded."""
    with pytest.raises(TypeError, match=f"sentences must be a str or a list of str, got {type(bad).__name__}"):
        minilm.encode(bad)


def test_missing_folder_and_files_name_the_path(tmp_path, model_copy):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        SentenceEncoder.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="not found"):
        SentenceEncoder.from_pretrained("no-such-model-name")
    folder = model_copy(skip=("model.safetensors",))
    with pytest.raises(FileNotFoundError, match=f"no model.safetensors .* in {folder}"):
        SentenceEncoder.from_pretrained(folder)
    folder = model_copy("noconfig", skip=("config.json",))
    with pytest.raises(FileNotFoundError, match=str(folder / "config.json")):
        SentenceEncoder.from_pretrained(folder)


def test_truncated_and_corrupt_safetensors_name_the_file(model_copy, minilm_dir):
    for name, damage in [("truncated", lambda b: b[: len(b) // 2]), ("corrupt", lambda b: b"\x07" * 64 + b[64:]),
                         ("empty", lambda b: b"")]:
        folder = model_copy(name)
        target = folder / "model.safetensors"
        target.unlink()
        target.write_bytes(damage((minilm_dir / "model.safetensors").read_bytes()))
        with pytest.raises(ValueError, match=f"{target}: not a readable safetensors file"):
            BertModel.from_pretrained(folder)


def test_config_weights_mismatch_names_keys_and_shapes(model_copy):
    folder = model_copy()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 7}))
    with pytest.raises(ValueError, match=r"missing 16 tensors: encoder.layer.6.attention.self.query.weight"):
        BertModel.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 5}))
    with pytest.raises(ValueError, match=r"unexpected 16 tensors: encoder.layer.5."):
        BertModel.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 1024}))
    with pytest.raises(ValueError, match=r"encoder.layer.0.intermediate.dense.weight has shape \(1536, 384\), "
                                         r"but .*config.json implies \(1024, 384\)"):
        BertModel.from_pretrained(folder)


def test_extra_and_task_tensors(tmp_path):
    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    model = BertModel(config, add_pooler=False)
    from minibert.weights import save_pretrained

    save_pretrained(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({**tensors, "classifier.weight": torch.zeros(3, 8), "embeddings.position_ids": torch.arange(512)[None]},
              tmp_path / "model.safetensors")
    loaded = BertModel.from_pretrained(tmp_path)
    assert sorted(loaded.load_report.skipped) == ["classifier.weight", "embeddings.position_ids"]
    assert loaded.pooler is None
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    extra = {"encoder.layer.0.attention.self.rotary.weight": torch.zeros(2)}
    save_file({**tensors, **extra}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected 1 tensors: encoder.layer.0.attention.self.rotary.weight"):
        BertModel.from_pretrained(tmp_path)


def test_sharded_checkpoint_loads(tmp_path):
    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16)
    model = BertModel(config)
    from minibert.weights import bert_key_map, save_pretrained

    save_pretrained(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for file, names in shards.items():
        save_file({k: tensors[k] for k in names}, tmp_path / file)
    weight_map = {k: file for file, names in shards.items() for k in names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = BertModel.from_pretrained(tmp_path)
    assert loaded.load_report.loaded == len(bert_key_map(2, True))
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert len(load_safetensors(tmp_path)) == len(tensors)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        BertModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("key,value,match", [
    ("position_embedding_type", "relative_key", "position_embedding_type='relative_key' is not supported"),
    ("hidden_act", "prelu", "hidden_act 'prelu' has learnt parameters of its own"),
    ("hidden_act", "swiss", "hidden_act 'swiss' is not an activation transformers knows"),
    ("model_type", "roberta", "model_type='roberta' is not supported"),
    ("num_attention_heads", 5, "not divisible"),
    ("hidden_size", -4, "hidden_size must be a positive integer"),
])
def test_unsupported_config_values_are_errors(model_copy, key, value, match):
    folder = model_copy()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ValueError, match=match):
        BertModel.from_pretrained(folder)


def test_unsupported_pipeline_module_is_an_error(model_copy):
    folder = model_copy()
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_LayerNorm", "type": "sentence_transformers.models.LayerNorm"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=r"modules.json: module 'sentence_transformers.models.LayerNorm' .* not "
                                         r"supported by minibert \(supported: sentence-transformers' Transformer, "
                                         r"Pooling, Dense, Normalize\)"):
        SentenceEncoder.from_pretrained(folder)


def test_sequence_longer_than_positions_is_an_error():
    config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=10)
    with pytest.raises(ValueError, match="sequence length 11 exceeds max_position_embeddings 10"):
        BertModel(config)(torch.zeros(1, 11, dtype=torch.long))

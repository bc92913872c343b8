"""Fuzzing every file minibert reads and its command line (hypothesis): random values and types in
config.json, tokenizer.json, vocab.txt, tokenizer_config.json, 1_Pooling/config.json, modules.json,
tasks.json and training configurations; damaged safetensors files; .npy inputs; CLI arguments.

Whatever the input, the outcome is one of two: it loads, and what was loaded is what the file says; or
a ValueError, FileNotFoundError or TypeError whose message names the file (or the setting, key or index)
at fault. Any other exception, or an error that names nothing, fails the test.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import tempfile
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from minibert import BertConfig, SentenceEncoder
from minibert.cli import main, run
from minibert.multitask import MultiTaskModel
from minibert.pooling import PoolingConfig
from minibert.tokenizer import Tokenizer
from minibert.train.config_file import load_config

CLEAR = (ValueError, FileNotFoundError, TypeError)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """The command line's exit code and what it wrote to stderr. The command runs without ``main``'s handler:
    an error other than a clear one (CLEAR, or OSError for a file) fails the test with its traceback."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = run(argv)
        except SystemExit as e:
            code = e.code
        except (*CLEAR, OSError):
            code = main(argv)  # again, through the handler: what a user sees
    return code, err.getvalue()
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
SMALL_INTS = st.integers(-2, 70)


def outcome(fn, *culprits: str):
    """fn()'s result, or None after a clear error: one of CLEAR whose message names one of `culprits`."""
    try:
        result = fn()
    except CLEAR as e:
        assert any(c in str(e) for c in culprits), f"{type(e).__name__} names none of {culprits}: {e}"
        event(type(e).__name__)  # counted in --hypothesis-show-statistics
        return None
    event("loaded")
    return result


@contextmanager
def model_folder(tiny_model_dir: Path, **files):
    """A copy of the tiny model folder (weights linked), with `files` (name -> text, bytes or JSON) written."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        for item in tiny_model_dir.iterdir():
            (folder / item.name).symlink_to(item.resolve())
        for name, content in files.items():
            target = folder / name.replace("__", "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        yield folder


@pytest.fixture(scope="module")
def tiny_config_json(tiny_model_dir) -> dict:
    return json.loads((tiny_model_dir / "config.json").read_text())


CONFIG_FIELDS = [f.name for f in dataclasses.fields(BertConfig)]
KEYS = [*CONFIG_FIELDS, "model_type", "position_embedding_type", "is_decoder", "add_cross_attention"]


@settings(max_examples=150)
@given(changes=st.dictionaries(st.sampled_from(KEYS), JSON | SMALL_INTS | st.floats(0, 1), max_size=3),
       dropped=st.lists(st.sampled_from(KEYS), max_size=2))
def test_config_json(tiny_model_dir, tiny_config_json, changes, dropped):
    config = {k: v for k, v in {**tiny_config_json, **changes}.items() if k not in dropped}
    with model_folder(tiny_model_dir, **{"config.json": config}) as folder:
        encoder = outcome(lambda: SentenceEncoder.from_pretrained(folder), str(folder))
    if encoder is not None:  # what loaded is what the file says
        for key, value in config.items():
            if key in CONFIG_FIELDS:
                assert getattr(encoder.bert.config, key) == value, key


@settings(max_examples=100)
@given(config=JSON)
def test_config_json_of_any_shape(tiny_model_dir, config):
    with model_folder(tiny_model_dir, **{"config.json": config}) as folder:
        assert outcome(lambda: SentenceEncoder.from_pretrained(folder), str(folder / "config.json")) is None


@pytest.fixture(scope="module")
def tiny_tensors(tiny_model_dir) -> dict[str, torch.Tensor]:
    return load_file(tiny_model_dir / "model.safetensors")


@settings(max_examples=120)
@given(data=st.data(), damage=st.sampled_from(["truncate", "header", "dtype", "shape", "extra", "missing"]))
def test_damaged_safetensors(tiny_model_dir, tiny_tensors, data, damage):
    names = sorted(tiny_tensors)
    key = data.draw(st.sampled_from(names))
    tensors = dict(tiny_tensors)
    raw = (tiny_model_dir / "model.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    if damage == "dtype":
        tensors[key] = tensors[key].to(data.draw(st.sampled_from([torch.int32, torch.int64, torch.bool,
                                                                   torch.float16, torch.bfloat16, torch.float64])))
    elif damage == "shape":
        t = tensors[key]
        tensors[key] = data.draw(st.sampled_from([t[:-1], t.flatten(), t[None], t.T.contiguous() if t.ndim == 2
                                                  else t[:1]])).contiguous()
        assume(tensors[key].shape != t.shape)
    elif damage == "extra":
        key = data.draw(st.text(min_size=1, max_size=12))
        tensors[key] = torch.zeros(2)
    elif damage == "missing":
        del tensors[key]
    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(tmp) / "model.safetensors"
        save_file(tensors, str(blob))
        if damage == "truncate":
            blob.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
        elif damage == "header":
            at = data.draw(st.integers(0, header_end - 1))
            blob.write_bytes(raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1:])
        with model_folder(tiny_model_dir, **{"model.safetensors": blob.read_bytes()}) as folder:
            encoder = outcome(lambda: SentenceEncoder.from_pretrained(folder, path="reference"),
                              str(folder / "model.safetensors"), key)
    if encoder is not None:  # it loaded what the file holds (a float of another width, a harmless header byte)
        from minibert.weights import hf_tensors

        written = tiny_tensors if damage == "header" else tensors
        for name, tensor in hf_tensors(encoder.bert).items():
            torch.testing.assert_close(tensor, written[name].to(tensor.dtype), atol=0, rtol=0, msg=name)
        assert damage in ("dtype", "header") or key in encoder.bert.load_report.skipped  # a task head, say


VOCAB_WORDS = st.sampled_from(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "##a", "the", "", " ", "\t",
                               "caf\u00e9", "\U0001f600"])


@settings(max_examples=100)
@given(lines=st.lists(VOCAB_WORDS | st.text(max_size=4), max_size=12).flatmap(
    lambda words: st.permutations(words + ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]) | st.just(words)),
    lowercase=st.booleans())
def test_vocab_txt(tmp_path_factory, lines, lowercase):
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    tok = outcome(lambda: Tokenizer.from_pretrained(folder), str(folder / "vocab.txt"))
    if tok is not None:  # line i is token i, its trailing whitespace dropped (as the tokenizers library reads it)
        vocab = tok.backend.get_vocab()
        for i, line in enumerate(lines):
            if line.rstrip() and "\n" not in line and "\r" not in line:
                assert vocab.get(line.rstrip()) == i, (line, i)


@settings(max_examples=100)
@given(content=st.one_of(JSON.map(json.dumps), st.binary(max_size=64).map(lambda b: b.decode("latin-1"))),
       tok_config=st.dictionaries(st.sampled_from(["do_lower_case", "pad_token", "strip_accents", "model_max_length",
                                                   "tokenize_chinese_chars"]), JSON, max_size=3))
def test_tokenizer_files(tiny_model_dir, content, tok_config):
    with model_folder(tiny_model_dir, **{"tokenizer.json": content}) as folder:
        outcome(lambda: Tokenizer.from_pretrained(folder), str(folder / "tokenizer.json"))
    with model_folder(tiny_model_dir, **{"tokenizer_config.json": tok_config}) as folder:
        tok = outcome(lambda: SentenceEncoder.from_pretrained(folder).tokenizer, str(folder / "tokenizer_config.json"),
                      str(folder))
        if tok is not None and isinstance(tok_config.get("model_max_length"), int):
            assert tok.max_length == min(tok_config["model_max_length"], 64)


@settings(max_examples=150)
@given(pooling=st.dictionaries(st.sampled_from(["pooling_mode", "embedding_dimension", "word_embedding_dimension",
                                                "include_prompt", "pooling_mode_cls_token", "pooling_mode_mean_tokens",
                                                "pooling_mode_max_tokens", "pooling_mode_lasttoken"]),
                               JSON | st.sampled_from(["cls", "mean", "max", ["mean", "cls"], 32, True]), max_size=4),
       modules=st.lists(st.fixed_dictionaries({"idx": SMALL_INTS | JSON, "path": st.sampled_from(["", "1_Pooling", "x"])
                                               | JSON, "type": st.sampled_from(
           ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize", "sentence_transformers.models.Dense"]) | JSON}), max_size=4)
       | st.just([{"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
                  {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
def test_pooling_and_modules_json(tiny_model_dir, pooling, modules):
    files = {"1_Pooling__config.json": pooling, "modules.json": modules}
    with model_folder(tiny_model_dir, **files) as folder:
        encoder = outcome(lambda: SentenceEncoder.from_pretrained(folder), str(folder / "modules.json"),
                          str(folder / "1_Pooling"), str(folder / "x"))  # a module's folder, or its config
    if encoder is not None and any(str(m.get("type")).endswith("Pooling") and m.get("path") == "1_Pooling"
                                   for m in modules) and "pooling_mode" in pooling:
        expected = PoolingConfig(pooling["pooling_mode"]).modes
        assert encoder.pooling.config.modes == expected


@pytest.fixture(scope="module")
def saved_multitask(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mt") / "mt"
    MultiTaskModel.from_encoder(tiny_model_dir, [{"name": "topic", "type": "classification", "labels": ["a", "b"]},
                                                 {"name": "sts", "type": "sts"}]).save(folder)
    return folder


@settings(max_examples=100)
@given(edit=st.dictionaries(st.sampled_from(["name", "type", "labels", "dropout", "hidden_layer", "loss", "max_score"]),
                            JSON | st.sampled_from(["topic", "sts", "nli", ["a", "b", "c"], 0.2, "cosent"]),
                            max_size=3),
       task=st.integers(0, 1), version=st.sampled_from([1, 2, 3, None]))
def test_tasks_json(saved_multitask, edit, task, version):
    spec = json.loads((saved_multitask / "tasks.json").read_text())
    spec["tasks"][task].update(edit)
    spec["version"] = version
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mt"
        shutil.copytree(saved_multitask, folder)
        (folder / "tasks.json").write_text(json.dumps(spec))
        model = outcome(lambda: MultiTaskModel.load(folder), str(folder / "tasks.json"),
                        str(folder / "heads.safetensors"))
    if model is not None:
        assert [t.to_dict()["name"] for t in model.tasks.values()] == [t["name"] for t in spec["tasks"]]


TRAIN_KEYS = {"": ["steps", "batch_size", "seed", "model", "output_dir", "lr"],
              "optim": ["lr", "layer_decay", "head_lr", "grad_accum", "sam_rho", "nope"],
              "schedule": ["warmup_ratio", "shape"], "sampling": ["strategy", "temperature", "finish_steps"],
              "runtime": ["device", "precision", "path", "num_workers"], "eval": ["every", "best_metric"],
              "encoder": ["freeze", "pooling", "dropout", "init"], "output": ["log_every", "plot"]}
SETTINGS = st.sampled_from([f"{s}.{k}" if s else k for s, keys in TRAIN_KEYS.items() for k in keys])


PLAUSIBLE = (st.integers(0, 40) | st.floats(0, 2) | st.booleans() | st.none() | st.lists(st.sampled_from(
    ["embeddings", "layers:1", "mean", "cls"]), max_size=2) | st.sampled_from(
    ["fast", "reference", "int8", "bf16", "fp32", "cosine", "linear", "temperature", "random", "cpu", "mean"]))


@settings(max_examples=200)
@given(values=st.dictionaries(SETTINGS, PLAUSIBLE | JSON, max_size=4),
       tasks=st.sampled_from([None, None, None, [], "sts", [{"name": "a"}], [{"type": "sts"}]]))
def test_training_configurations(values, tasks):
    base = {"tasks": [{"name": "sts", "type": "sts", "train": "x.tsv"}]}
    if tasks is not None:
        base["tasks"] = tasks
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        (base.setdefault(section, {}) if section else base)[name] = value
    named = [k.rpartition(".")[2] for k in values] + ["tasks", "task", "configuration"]
    config = outcome(lambda: load_config(None, base=base), *named)
    if config is not None:
        for key, value in values.items():
            section, _, name = key.rpartition(".")
            assert getattr(getattr(config, section) if section else config, name) == value


@settings(max_examples=60)
@given(text=st.text(max_size=60))
def test_toml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(text, encoding="utf-8")
    outcome(lambda: load_config(path), str(path))


ARRAYS = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64]).flatmap(
    lambda dtype: st.lists(st.integers(0, 4), min_size=0, max_size=3).map(
        lambda shape: np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)))


@settings(max_examples=80)
@given(corpus=ARRAYS, queries=ARRAYS, broken=st.booleans())
def test_search_npy_inputs(tmp_path_factory, corpus, queries, broken):
    folder = tmp_path_factory.mktemp("npy")
    np.save(folder / "c.npy", corpus)
    np.save(folder / "q.npy", queries)
    if broken:
        (folder / "c.npy").write_bytes((folder / "c.npy").read_bytes()[:40])
    code, err = run_cli(["search", "--corpus", str(folder / "c.npy"), "--queries", str(folder / "q.npy"),
                         "--top-k", "2"])
    good = not broken and all(a.ndim == 2 and min(a.shape) > 0 and np.issubdtype(a.dtype, np.floating)
                              and a.shape[1] == corpus.shape[1] for a in (corpus, queries))
    assert code == (0 if good else 1), err
    if not good:
        assert err.startswith("minibert: error: ") and ("c.npy" in err or "q.npy" in err or "embeddings" in err), err


CLI_WORDS = st.sampled_from(["encode", "similarity", "search", "mine", "communities", "predict", "--input", "--output",
                             "--model", "--threshold", "--min-size", "nan",
                             "--path", "fast", "int8", "reference", "--dtype", "bfloat16", "--device", "cpu",
                             "cuda:7", "--batch-size", "0", "-3", "2", "--top-k", "--preview", "--max-pairs", "--pairs",
                             "a sentence", "", "-", "--corpus", "--queries", "--chunk-lines", "--errors", "replace",
                             "--no-normalize", "--fast", "--score", "dot", "--help"])


@settings(max_examples=150)
@given(argv=st.lists(CLI_WORDS | st.text(max_size=6), max_size=7))
def test_command_line_arguments(tiny_model_dir, tmp_path_factory, argv):
    """Any arguments: an exit code and a one-line message, never a traceback."""
    folder = tmp_path_factory.mktemp("cli")
    argv = [w for a in argv for w in (["--output", str(folder / "out.npy")] if a == "--output" else [a])]  # in tmp
    argv = [*argv, "--model", str(tiny_model_dir)] if argv and argv[0] in ("encode", "similarity", "mine",
                                                                            "communities") else argv
    code, err = run_cli(argv)
    assert code in (0, 1, 2)  # argparse: usage errors (2) and --help (0)
    if code == 1:
        assert err.startswith("minibert: error: ") and err.count("\n") == 1, err

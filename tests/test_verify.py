"""`minibert verify`: the parity check as a command, on the default model; it must also be able to fail."""

from __future__ import annotations

import json

import pytest
import torch

from minibert import verify as verify_module
from minibert.cli import main
from minibert.paths import has_cpp_compiler

pytest.importorskip("transformers", reason="verify compares with transformers")
pytest.importorskip("sentence_transformers", reason="verify compares with sentence-transformers")


def test_verify_passes_on_the_default_model(minilm_dir, capsys):
    assert main(["verify", str(minilm_dir)]) == 0
    out = capsys.readouterr().out
    assert "bert, 6 layers, 384 dims, at most 256 tokens" in out
    assert out.count("after ") == 6 and "reference fp32" in out and "fast bf16" in out
    assert "OK: every difference is within its tolerance" in out


def test_verify_fails_when_minibert_differs(tiny_model_dir, monkeypatch, capsys):
    real = verify_module.run_paths

    def off_by_a_little(folder, paths):
        encoders = real(folder, paths)
        with torch.no_grad():  # a wrong weight in minibert's fast model only
            encoders["fast"].bert.blocks[1].ffn_out.bias[0] += 0.01  # (a shift of all would vanish in LN)
        int8 = encoders["int8"].encode
        encoders["int8"].encode = lambda *args, **kwargs: -int8(*args, **kwargs)  # every direction turned round
        return encoders

    monkeypatch.setattr(verify_module, "run_paths", off_by_a_little)
    assert main(["verify", str(tiny_model_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "check(s) FAILED" in out
    table = out.split("hidden states")[1]
    assert "FAIL" not in table.split("after 2")[0]  # layers before the wrong one are still equal
    assert "FAIL" in table.split("after 2")[1].splitlines()[0]
    assert "FAIL" in next(line for line in out.splitlines() if line.strip().startswith("int8"))


def test_verify_without_the_references_says_what_to_install(minilm_dir, monkeypatch, capsys):
    monkeypatch.setattr(verify_module, "missing_references", lambda: ["transformers", "sentence-transformers"])
    assert main(["verify", str(minilm_dir)]) == 2
    assert "pip install transformers sentence-transformers" in capsys.readouterr().out


def test_bf16_tolerance_is_units_in_the_last_place():
    assert verify_module.bf16_tolerance(torch.tensor([5.0, -7.9]), 2) == 2 * 2.0 ** (2 - 7)  # 0.0625
    assert verify_module.bf16_tolerance(torch.tensor([0.3]), 4) == 4 * 2.0 ** (-2 - 7)


@pytest.mark.parametrize("arguments, message", [(["--batch-size", "-1"], "--batch-size must be a positive integer"),
                                                (["--batch-size", "0"], "--batch-size must be a positive integer"),
                                                (["--paths", "fast,nope"], "--paths takes names from")])
def test_bad_arguments_are_one_line_errors_before_anything_loads(minilm_dir, monkeypatch, capsys, arguments, message):
    def no_loading(*args):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(verify_module, "run_paths", no_loading)
    assert main(["verify", str(minilm_dir), *arguments]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"minibert: error: {message}") and err.count("\n") == 1


@pytest.mark.parametrize("config", [{}, {"model_type": "gpt2"}], ids=["no model_type", "unknown model_type"])
def test_a_folder_without_a_family_is_refused_with_the_reason(model_copy, capsys, config):
    folder = model_copy()
    raw = json.loads((folder / "config.json").read_text())
    raw.pop("model_type")
    (folder / "config.json").write_text(json.dumps({**raw, **config}))
    assert main(["verify", str(folder)]) == 1
    err = capsys.readouterr().err
    assert ("has no model_type" if not config else "model_type='gpt2' is not supported") in err


def test_verify_checks_the_compiled_path(tiny_model_dir, capsys):
    if not has_cpp_compiler():
        pytest.skip("the compiled path on the CPU needs a C++ compiler (CI has g++)")
    assert main(["verify", str(tiny_model_dir), "--paths", "compiled,int8"]) == 0
    out = capsys.readouterr().out
    assert "compiled fp32" in out and out.count("after ") == 2 and "cosine lowest" in out

"""`minibert verify`: the parity check as a command, on the default model; it must also be able to fail."""

from __future__ import annotations

import pytest
import torch

from minibert import verify as verify_module
from minibert.cli import main

pytest.importorskip("transformers", reason="verify compares with transformers")
pytest.importorskip("sentence_transformers", reason="verify compares with sentence-transformers")


def test_verify_passes_on_the_default_model(minilm_dir, capsys):
    assert main(["verify", str(minilm_dir)]) == 0
    out = capsys.readouterr().out
    assert "bert, 6 layers, 384 dims, at most 256 tokens" in out
    assert out.count("after ") == 6 and "reference fp32" in out and "fast bf16" in out
    assert "OK: every difference is within its tolerance" in out


def test_verify_fails_when_minibert_differs(minilm_dir, monkeypatch, capsys):
    real = verify_module.run_paths

    def off_by_a_little(folder):
        encoders = real(folder)
        with torch.no_grad():  # a wrong weight in minibert's fast model only
            encoders["fast fp32"].bert.blocks[3].ffn_out.bias[0] += 0.01  # (a shift of all would vanish in LN)
        return encoders

    monkeypatch.setattr(verify_module, "run_paths", off_by_a_little)
    assert main(["verify", str(minilm_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "check(s) FAILED" in out
    table = out.split("hidden states")[1]
    assert "FAIL" not in table.split("after 4")[0]  # layers before the wrong one are still equal


def test_verify_without_the_references_says_what_to_install(minilm_dir, monkeypatch, capsys):
    monkeypatch.setattr(verify_module, "missing_references", lambda: ["transformers", "sentence-transformers"])
    assert main(["verify", str(minilm_dir)]) == 2
    assert "pip install transformers sentence-transformers" in capsys.readouterr().out


def test_bf16_tolerance_is_units_in_the_last_place():
    assert verify_module.bf16_tolerance(torch.tensor([5.0, -7.9]), 2) == 2 * 2.0 ** (2 - 7)  # 0.0625
    assert verify_module.bf16_tolerance(torch.tensor([0.3]), 4) == 4 * 2.0 ** (-2 - 7)

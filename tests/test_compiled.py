"""The compiled path (minibert.compiled) against the reference path: outputs, gradients, training.

On the CPU, torch.compile generates C++ (it needs a C++ compiler); on CUDA it adds CUDA graphs.
A tiny model keeps the compilations to seconds."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_losses_match, tiny_config, train_tiny
from torch._dynamo.utils import counters

from minibert import BertConfig, BertModel, SentenceEncoder
from minibert.compiled import CompiledBertModel, bucketed, next_power_of_two
from minibert.train import load_config

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="torch.compile on the CPU needs a C++ compiler (apt install g++)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertModel(config)


def test_bucket_arithmetic():
    assert [bucketed(n, 16, 40) for n in (1, 16, 17, 33, 40)] == [16, 16, 32, 40, 40]
    assert [next_power_of_two(n) for n in (1, 2, 3, 5, 32, 33)] == [1, 2, 4, 8, 32, 64]


@needs_compiler
def test_compiled_outputs_and_gradients_match_the_reference():
    ref = tiny_bert()
    compiled = CompiledBertModel.from_bert(copy.deepcopy(ref), bucket=16)
    ids = torch.randint(1, 50, (3, 11))
    mask = torch.tensor([[1] * 11, [1] * 6 + [0] * 5, [1] * 2 + [0] * 9])
    outs = []
    for model in (ref, compiled):
        model.train()
        out = model(ids, mask)
        weights = torch.linspace(-1, 1, out.last_hidden_state.numel()).view_as(out.last_hidden_state)
        ((out.last_hidden_state * weights * mask[..., None]).sum() + out.pooler_output.sum()).backward()
        outs.append(out)
    assert outs[1].last_hidden_state.shape == (3, 11, 32)  # padded to (4, 16) inside, cut back
    torch.testing.assert_close(outs[1].last_hidden_state, outs[0].last_hidden_state, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outs[1].pooler_output, outs[0].pooler_output, atol=1e-5, rtol=1e-4)
    grads = dict(compiled.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-3, msg=name)
    ref.embeddings.requires_grad_(False)
    twin = CompiledBertModel.from_bert(ref)  # shares the tensors, and what was frozen stays frozen
    assert twin.blocks[1].ffn_out.weight.data_ptr() == ref.blocks[1].ffn_out.weight.data_ptr()
    assert [p.requires_grad for p in twin.parameters()] == [p.requires_grad for p in ref.parameters()]
    copied = copy.deepcopy(twin)  # a copy runs its own weights, not the original's
    with torch.no_grad():
        copied.blocks[0].ffn_out.bias.add_(1.0)
        assert not torch.allclose(copied(ids, mask).last_hidden_state, twin(ids, mask).last_hidden_state)


@needs_compiler
def test_encode_compiled_matches_the_reference(minilm, sentences):
    compiled = minilm.to_compiled(bucket=16)
    assert compiled.bert.blocks[0].ffn_in.weight.data_ptr() == minilm.bert.blocks[0].ffn_in.weight.data_ptr()
    np.testing.assert_allclose(compiled.encode(sentences, batch_size=4), minilm.encode(sentences), atol=1e-5, rtol=0)


def test_cli_compile_is_a_path_of_its_own(capsys):
    from minibert.cli import main

    assert main(["similarity", "--compile", "--fast", "a", "b"]) == 1
    assert "--compile is a path of its own" in capsys.readouterr().err


@needs_compiler
def test_training_compiled_follows_the_reference(tiny_model_dir, tiny_data, tmp_path):
    losses = {}
    for compile in (False, True):
        counters.clear()
        losses[compile] = train_tiny(tiny_model_dir, tiny_data, tmp_path / f"compile-{compile}", only=("sts", "topic"),
                                     steps=4, eval_every=0, log_every=1, dropout=0.0, compile=compile)
        assert bool(counters["stats"]["unique_graphs"]) == compile  # the compiled path ran, and only there
    assert len(losses[True]) == 4
    assert_losses_match(losses[False], losses[True], rel=1e-4, abs=1e-6)
    reloaded = SentenceEncoder.from_pretrained(tmp_path / "compile-True" / "final")  # saved as a plain BERT
    assert isinstance(reloaded.bert, BertModel) and not isinstance(reloaded.bert, CompiledBertModel)
    with pytest.raises(ValueError, match="fast and compile are two different paths"):
        load_config(None, ["fast=true", "compile=true"], base=tiny_config(tiny_model_dir, tiny_data, tmp_path))


@needs_cuda
def test_cuda_compiled_with_graphs_matches_the_reference(minilm_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(minilm_dir, device="cuda")
    ref = encoder.encode(sentences)
    compiled = encoder.to_compiled()
    assert compiled.bert.mode == "reduce-overhead"
    for _ in range(3):  # recorded, then replayed
        np.testing.assert_allclose(compiled.encode(sentences, batch_size=4), ref, atol=1e-4, rtol=0)

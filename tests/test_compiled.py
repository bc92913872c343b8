"""The compiled path (minibert.paths.compiled) against the reference path: outputs, gradients, training.

On the CPU, torch.compile generates C++ (it needs a C++ compiler); on CUDA it adds CUDA graphs.
A tiny model keeps the compilations to seconds."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from minibert import BertConfig, BertModel, SentenceEncoder
from minibert.paths import convert
from minibert.paths.compiled import bucketed, next_power_of_two
from minibert.train import load_config

from conftest import assert_losses_match, tiny_config, train_tiny

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
    compiled = convert(copy.deepcopy(ref), "compiled", bucket=16)
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
    with torch.no_grad():  # every layer's states, as the other paths give them
        states = [m.eval()(ids, mask, output_hidden_states=True).hidden_states for m in (ref, compiled)]
    assert len(states[1]) == 3 and states[1][1].shape == (3, 11, 32)
    for layer, (ours, theirs) in enumerate(zip(states[1], states[0], strict=True)):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4, msg=f"layer {layer}")
    ref.embeddings.requires_grad_(False)
    twin = convert(ref, "compiled")  # shares the tensors, and what was frozen stays frozen
    assert twin.blocks[1].ffn_out.weight.data_ptr() == ref.blocks[1].ffn_out.weight.data_ptr()
    assert [p.requires_grad for p in twin.parameters()] == [p.requires_grad for p in ref.parameters()]
    copied = copy.deepcopy(twin)  # a copy runs its own weights, not the original's
    with torch.no_grad():
        copied.blocks[0].ffn_out.bias.add_(1.0)
        assert not torch.allclose(copied(ids, mask).last_hidden_state, twin(ids, mask).last_hidden_state)


@needs_compiler
def test_on_the_cpu_one_compilation_serves_every_batch_shape():
    """Without CUDA graphs nothing needs fixed shapes: the CPU's default compiles once, with symbolic sizes,
    and pads nothing (padding is work the other paths never do)."""
    ref = tiny_bert().eval()
    compiled = convert(copy.deepcopy(ref), "compiled")
    assert compiled.bucket is None and convert(ref, "compiled", bucket=8).bucket == 8
    with pytest.raises(ValueError, match="bucket must be >= 1, got 0"):
        convert(ref, "compiled", bucket=0)
    counters.clear()
    with torch.no_grad():
        for rows, length in ((2, 5), (3, 9), (5, 17), (4, 40)):
            ids = torch.randint(1, 50, (rows, length))
            mask = torch.ones(rows, length, dtype=torch.long)
            mask[1:, length // 2:] = 0
            torch.testing.assert_close(compiled(ids, mask).last_hidden_state, ref(ids, mask).last_hidden_state,
                                       atol=1e-5, rtol=1e-4, msg=f"{rows} x {length}")
    assert counters["stats"]["unique_graphs"] == 1


@needs_compiler
def test_encode_compiled_matches_the_reference(minilm_reference, sentences):
    compiled = minilm_reference.to_path("compiled", bucket=16)
    assert compiled.bert.blocks[0].ffn_in.weight.data_ptr() == minilm_reference.bert.blocks[0].ffn_in.weight.data_ptr()
    np.testing.assert_allclose(compiled.encode(sentences, batch_size=4), minilm_reference.encode(sentences),
                               atol=1e-5, rtol=0)


@needs_compiler
def test_training_compiled_follows_the_reference(tiny_model_dir, tiny_data, tmp_path):
    losses = {}
    for path in ("reference", "compiled"):
        counters.clear()
        losses[path] = train_tiny(tiny_model_dir, tiny_data, tmp_path / path, only=("sts", "topic"), steps=4,
                                  eval={"every": 0}, output={"log_every": 1}, encoder={"dropout": 0.0},
                                  runtime={"path": path})
        assert bool(counters["stats"]["unique_graphs"]) == (path == "compiled")  # the compiled path ran, only there
    assert len(losses["compiled"]) == 4
    assert_losses_match(losses["reference"], losses["compiled"], rel=1e-4, abs=1e-6)
    reloaded = SentenceEncoder.from_pretrained(tmp_path / "compiled" / "final", path="reference")  # a plain BERT
    assert type(reloaded.bert) is BertModel
    with pytest.raises(ValueError, match='compile is now runtime.path = "compiled"'):
        load_config(None, ["compile=true"], base=tiny_config(tiny_model_dir, tiny_data, tmp_path))


@needs_cuda
def test_cuda_compiled_with_graphs_matches_the_reference(minilm_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(minilm_dir, device="cuda", path="reference")
    ref = encoder.encode(sentences)
    compiled = encoder.to_path("compiled")
    assert compiled.bert.mode == "reduce-overhead"
    for _ in range(3):  # recorded, then replayed
        np.testing.assert_allclose(compiled.encode(sentences, batch_size=4), ref, atol=1e-4, rtol=0)

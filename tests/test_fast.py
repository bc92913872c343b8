"""The fast path (minibert.paths.fast) against the reference path: outputs, gradients, saving, training, int8."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minibert import SentenceEncoder
from minibert.data import PairExample
from minibert.model import BertModel
from minibert.multitask import MultiTaskModel
from minibert.paths import convert
from minibert.paths.fast import FastLinear, Packing
from minibert.paths.int8 import Int8Linear, quantize_int8, quantize_rows, quantize_rows_with_offset
from minibert.weights import fuse_qkv, save_pretrained, split_qkv

from conftest import assert_losses_match, train_tiny

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PAIRS = [PairExample("A man is playing a guitar.", "Someone plays music on a stage tonight.", 4.2),
         PairExample("Kids run.", "The stock market fell sharply today after the report.", 0.4),
         PairExample("A dog barks at the mailman.", "A dog barks.", 3.9)]


def test_packing_keeps_exactly_the_real_tokens():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    packing = Packing.from_mask(mask)
    x = torch.arange(12.0).view(3, 4, 1)
    packed = packing.pack(x)
    assert packed.flatten().tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    assert packing.cu_seqlens.tolist() == [0, 3, 7, 8] and packing.max_len == 4
    assert torch.equal(packing.unpack(packed), x * mask[..., None])  # zeros where the padding was
    full = Packing.from_mask(torch.ones(2, 3))
    assert full.keep is None and torch.equal(full.unpack(full.pack(x[:2, :3])), x[:2, :3])


def test_a_batch_with_little_padding_keeps_its_grid(minilm_reference, monkeypatch):
    """Up to a tenth of padding, the rows are the whole grid (no copies), with the same outputs: padded keys
    masked, padded positions zero."""
    texts = ["one two three four five six seven eight nine ten eleven twelve"] * 3 + ["one two three four five six 7"]
    batch = minilm_reference.tokenizer(texts).tensors()
    fast = convert(minilm_reference.bert, "fast")
    used, from_mask = [], Packing.from_mask
    monkeypatch.setattr(Packing, "from_mask", staticmethod(lambda *args, **kw: used.append(from_mask(*args, **kw))
                                                           or used[-1]))
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = minilm_reference.bert(**batch).last_hidden_state
        out = fast(**batch).last_hidden_state
    assert len(used) == 1 and used[0].index is None and used[0].keep is not None  # 5 of 56 positions are padding
    torch.testing.assert_close(out[real], ref[real], atol=2e-5, rtol=1e-4)
    assert out[~real].abs().max() == 0
    assert Packing.from_mask(batch["attention_mask"], pack_above=0.05).index is not None  # a tenth is too much


def test_fuse_and_split_qkv_round_trip_and_name_what_is_missing(minilm_reference):
    state = minilm_reference.bert.state_dict()
    fused = fuse_qkv(state)
    assert "blocks.0.attention.qkv.weight" in fused and "blocks.0.attention.query.weight" not in fused
    assert fused["blocks.2.attention.qkv.bias"].shape == (3 * 384,)
    back = split_qkv(fused)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    del state["blocks.3.attention.value.bias"]
    with pytest.raises(KeyError, match=r"blocks\.3\.attention: query, key and value bias"):
        fuse_qkv(state)


def test_fast_outputs_match_the_reference(minilm_reference, sentences):
    fast = convert(minilm_reference.bert, "fast")
    batch = minilm_reference.tokenizer(sentences).tensors()
    with torch.no_grad():
        ref = minilm_reference.bert(**batch)
        out = fast(**batch)
    real = batch["attention_mask"].bool()
    assert (~real).any(), "the batch must contain padding"
    torch.testing.assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], atol=2e-5, rtol=1e-4)
    assert out.last_hidden_state[~real].abs().max() == 0
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=2e-6, rtol=1e-5)
    # shared tensors are the same storage: the twin costs only the fused QKV
    assert fast.blocks[0].ffn_in.weight.data_ptr() == minilm_reference.bert.blocks[0].ffn_in.weight.data_ptr()


def test_encode_fast_matches_the_reference(minilm, sentences):
    assert minilm.path == "fast"  # the default on the CPU
    ref = minilm.encode(sentences, path="reference")
    np.testing.assert_allclose(minilm.encode(sentences), ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(minilm.encode(sentences, batch_size=3), ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"path must be one of \('reference', 'fast', 'int8', 'compiled'\), got 'yes'"):
        minilm.encode(sentences, path="yes")


def test_fast_gradients_match_the_reference(minilm_dir):
    ref = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts"}], seed=0, path="reference")
    ref.encoder.bert.set_dropout(0.0)
    fast = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts"}], seed=0, path="fast")
    fast.encoder.bert.set_dropout(0.0)
    losses = {}
    for name, model in (("ref", ref), ("fast", fast)):
        model.train()
        loss = model("sts", model.collate("sts", PAIRS)).loss
        loss.backward()
        losses[name] = loss.item()
    assert losses["fast"] == pytest.approx(losses["ref"], rel=1e-5)
    fast_grads = split_qkv({n: p.grad for n, p in fast.encoder.bert.named_parameters()})
    for name, p in ref.encoder.bert.named_parameters():
        if p.grad is None:  # the pooler takes no part in a mean-pooled loss
            assert fast_grads[name] is None, name
            continue
        torch.testing.assert_close(fast_grads[name], p.grad, atol=1e-6, rtol=1e-3, msg=name)


def test_bf16_fast_path_stays_close_to_fp32(minilm_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(minilm_dir)
    ref = torch.as_tensor(encoder.encode(sentences, path="reference"))
    bf16 = torch.as_tensor(encoder.encode(sentences, dtype=torch.bfloat16))
    assert torch.nn.functional.cosine_similarity(bf16, ref).min() > 0.999


def test_autocast_reaches_the_fast_linear_layers():
    layer = FastLinear(8, 4)
    x = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=0.05, rtol=0.02)
    residual = torch.randn(5, 4)  # a LayerNorm's float32 output under autocast: the sum is float32, as x + y is
    with torch.autocast("cpu", dtype=torch.bfloat16):
        summed = layer(x, residual=residual)
    assert summed.dtype == torch.float32 and torch.equal(summed, residual + y)


def test_int8_linear_adds_a_residual_in_place_as_the_sum():
    torch.manual_seed(0)
    layer = Int8Linear(torch.nn.Linear(64, 48))
    x, residual = torch.randn(10, 64), torch.randn(10, 48)
    kept = residual.clone()
    assert torch.equal(layer(x, residual=residual), residual + layer(x)) and torch.equal(residual, kept)


def test_int8_keeps_the_embeddings_close(minilm_dir, sentences):
    encoder = SentenceEncoder.from_pretrained(minilm_dir)
    ref = torch.as_tensor(encoder.encode(sentences, path="reference"))
    int8 = torch.as_tensor(encoder.encode(sentences, path="int8"))
    cosine = torch.nn.functional.cosine_similarity(int8, ref)
    assert cosine.min() > 0.98 and cosine.mean() > 0.995  # per-batch scales (the old scheme): 0.95 and 0.988
    model = convert(encoder.bert, "int8")
    assert model.path == "int8" and encoder.path == "fast"
    assert {type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__} == {"Int8Linear"}
    assert type(encoder.bert.blocks[0].attention.qkv) is FastLinear  # a twin was quantized, not the model given
    with pytest.raises(ValueError, match="int8 quantization starts from a float32 CPU model"):
        quantize_int8(convert(encoder.bert, "fast").to(torch.bfloat16))
    with pytest.raises(ValueError, match="path 'int8' runs on the CPU in float32, not bfloat16 on cpu"):
        convert(encoder.bert.to(torch.bfloat16), "int8")
    with pytest.raises(ValueError, match="an int8 model holds quantized copies"):
        convert(model, "reference")
    with pytest.raises(ValueError, match="an int8 model holds quantized copies of its weights and cannot be saved"):
        save_pretrained(model, "unused")


def test_int8_linear_is_the_product_of_its_quantized_inputs():
    """y = (q_x s_x)(q_w s_w)^T + b with q_x, s_x per row of x and q_w, s_w per row of W; with an offset per
    row, x ~ s_x (q_x + 128) + low_x. The products exact."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(10, 64)
    x[3, 5] = 40.0  # an outlier token
    layer, with_offset = Int8Linear(linear), Int8Linear(linear, offset=True)
    q_x, s_x = quantize_rows(x)
    q_w, s_w = quantize_rows(linear.weight.detach())
    assert q_x.abs().amax(1).tolist() == [127] * 10 and q_w.dtype == torch.int8
    weight = (q_w.double() * s_w.double()).T
    torch.testing.assert_close(layer(x).double(), (q_x.double() * s_x.double()) @ weight + linear.bias.double(),
                               atol=1e-5, rtol=1e-6)
    q_o, s_o, low = quantize_rows_with_offset(x)
    assert q_o.amin(1).tolist() == [-128] * 10 and q_o.amax(1).tolist() == [127] * 10
    expected = (s_o.double() * (q_o.double() + 128) + low.double()) @ weight + linear.bias.double()
    torch.testing.assert_close(with_offset(x).double(), expected, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(layer(x[:3]), layer(x)[:3], atol=0, rtol=0)  # the outlier's row stays in its row
    with torch.no_grad():  # each row's error, relative to the row: the outlier's row is coarsest
        error = ((layer(x) - linear(x)).abs().amax(1) / linear(x).abs().amax(1)).tolist()
        assert max(error) == error[3] and max(error[:3] + error[4:]) < 0.015
        positive = torch.nn.functional.gelu(torch.randn(10, 64))  # far from symmetric: the offset keeps 8 bits
        assert (with_offset(positive) - linear(positive)).abs().mean() < 0.6 * (layer(positive) -
                                                                                linear(positive)).abs().mean()
    gelu = Int8Linear(linear, gelu="tanh")
    torch.testing.assert_close(gelu(x), torch.nn.functional.gelu(layer(x), approximate="tanh"), atol=0, rtol=0)


def test_smoothing_moves_an_outlier_channel_into_the_weights():
    """A channel 30x larger than the others in every token coarsens every token's grid; divided by
    s_j = sqrt(max|x_j| / max|W[:, j]|) (and W's column multiplied by it) it costs far less."""
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48)
    x = torch.randn(50, 64)
    x[:, 7] *= 30
    column_max = linear.weight.detach().abs().amax(0)
    smooth = (x.abs().amax(0) / column_max).sqrt()
    with torch.no_grad():
        plain = (Int8Linear(linear)(x) - linear(x)).abs().mean()
        smoothed = (Int8Linear(linear, smooth=smooth)(x) - linear(x)).abs().mean()
    assert smoothed < plain / 2  # measured: 0.0068 against 0.0162


@pytest.mark.parametrize("smoothed", [None, (".qkv", ".ffn_in", ".attention_out", ".ffn_out"), ()])
def test_quantize_int8_smooths_the_layernorm_fed_layers_by_their_measured_ranges(smoothed):
    """quantize_int8's own choices: qkv and ffn_in smoothed (by default; else the layers ``smoothed`` names) by
    s_j = max|x_j|^a / max|W[:, j]|^(1 - a), with max|x_j| over a forward pass on the calibration ids
    (recorded here by hooks of this test's own), the other layers not smoothed, and ffn_out (GELU's
    outputs) quantized with an offset."""
    from minibert.config import BertConfig

    torch.manual_seed(4)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=40)
    fast = convert(BertModel(config).eval(), "fast")
    ids = torch.randint(1, 60, (4, 12))
    seen, hooks = {}, []
    for name, module in fast.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(
                lambda m, inputs, out, name=name: seen.__setitem__(name, inputs[0].abs().amax(0))))
    weights = {name: m.weight.detach().clone() for name, m in fast.named_modules() if isinstance(m, torch.nn.Linear)}
    with torch.no_grad():
        fast(ids)
    for hook in hooks:
        hook.remove()
    alpha = 0.3
    chosen = {} if smoothed is None else {"smoothed": smoothed}
    int8 = quantize_int8(fast, smoothing=alpha, calibration=ids, **chosen)
    layers = {name: m for name, m in int8.named_modules() if isinstance(m, Int8Linear)}
    assert set(layers) == set(weights)  # every linear layer, the pooler's included
    kinds = 2 if smoothed is None else len(smoothed)  # of layer, smoothed in each of the 2 blocks
    assert sum(layer.inverse_smooth is not None for layer in layers.values()) == 2 * kinds
    for name, layer in layers.items():
        is_smoothed = name.endswith((".qkv", ".ffn_in") if smoothed is None else smoothed or ("\0",))
        assert (layer.inverse_smooth is not None) == is_smoothed, name
        assert layer.offset == name.endswith(".ffn_out"), name
        if is_smoothed:
            expected = seen[name].clamp(min=1e-5) ** alpha / weights[name].abs().amax(0).clamp(min=1e-5) ** (1 - alpha)
            torch.testing.assert_close(layer.inverse_smooth, expected.reciprocal(), rtol=1e-6, atol=0, msg=name)


def test_a_fast_model_saves_in_the_hugging_face_layout(minilm_dir, tmp_path):
    model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts"}], seed=0, path="fast")
    with torch.no_grad():
        model.encoder.bert.blocks[1].attention.qkv.weight.add_(0.01)  # as if trained
    model.save(tmp_path / "saved")
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert "encoder.layer.1.attention.self.key.weight" in saved and not any("qkv" in k for k in saved)
    reloaded = BertModel.from_pretrained(tmp_path / "saved")
    fused = model.encoder.bert.blocks[1].attention.qkv.weight
    torch.testing.assert_close(reloaded.blocks[1].attention.key.weight, fused.chunk(3)[1], atol=0, rtol=0)
    fast_again = convert(BertModel.from_pretrained(tmp_path / "saved"), "fast")  # and back into the fused layout
    torch.testing.assert_close(fast_again.blocks[1].attention.qkv.weight, fused, atol=0, rtol=0)


def test_training_with_fast_follows_the_reference(tiny_model_dir, tiny_data, tmp_path):
    losses = {}
    for path in ("reference", "fast"):
        losses[path] = train_tiny(tiny_model_dir, tiny_data, tmp_path / path, steps=8, eval={"every": 0},
                                  output={"log_every": 1}, encoder={"dropout": 0.0}, runtime={"path": path})
        assert (tmp_path / path / "final" / "model.safetensors").is_file()
    assert len(losses["fast"]) == 8
    assert_losses_match(losses["reference"], losses["fast"], rel=1e-3, abs=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_fast_path_matches_the_reference(minilm_dir, sentences, dtype):
    encoder = SentenceEncoder.from_pretrained(minilm_dir, device="cuda", dtype=dtype, path="fast")
    ref = torch.as_tensor(encoder.encode(sentences, path="reference")).float()
    fast = torch.as_tensor(encoder.encode(sentences, path="fast")).float()  # bf16: packed varlen attention
    assert torch.nn.functional.cosine_similarity(fast, ref).min() > (0.99999 if dtype == torch.float32 else 0.999)


@needs_cuda
def test_cuda_fast_gradients_match_the_reference(minilm_dir):
    models = []
    for fast in (False, True):
        model = MultiTaskModel.from_encoder(minilm_dir, [{"name": "sts", "type": "sts"}], seed=0, device="cuda",
                                            path="fast" if fast else "reference")
        model.encoder.bert.set_dropout(0.0)
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model("sts", model.collate("sts", PAIRS)).loss
        loss.backward()
        models.append(model)
    ref, fast = models
    grads = split_qkv({n: p.grad for n, p in fast.encoder.bert.named_parameters()})
    for name, p in ref.encoder.bert.named_parameters():
        if p.grad is not None:
            cos = torch.nn.functional.cosine_similarity(grads[name].flatten(), p.grad.flatten(), dim=0)
            assert cos > 0.99, name


def test_cli_paths(minilm, sentences, tmp_path, capsys):
    from minibert.cli import main

    (tmp_path / "in.txt").write_text("\n".join(sentences) + "\n")
    for path in ("reference", "int8"):
        out = tmp_path / f"{path}.npy"
        assert main(["encode", "--input", str(tmp_path / "in.txt"), "--output", str(out), "--path", path]) == 0
        np.testing.assert_allclose(np.load(out), minilm.encode(sentences, path=path), atol=1e-6, rtol=0)
    assert main(["similarity", "--path", "int8", "--dtype", "bfloat16", "a", "b"]) == 1
    assert "path 'int8' runs on the CPU in float32, not bfloat16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["encode", "--fast", "a"])
    assert "--fast is now --path fast" in capsys.readouterr().err

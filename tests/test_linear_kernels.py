"""The blocked kernel (minibert/paths/kernels.py): oneDNN's float32 products summed in blocks of input
channels, as a BLAS sums them. Values against hand-computed sums and the reference path."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from minibert import BertConfig, BertModel
from minibert.paths import convert, kernels

pytestmark = pytest.mark.skipif(kernels.ONEDNN_OP is None, reason="this torch build has no oneDNN linear")

# wider than one block, and not a multiple of it: the last block is short
WIDE = BertConfig(vocab_size=60, hidden_size=200, num_hidden_layers=2, num_attention_heads=4, intermediate_size=400,
                  max_position_embeddings=40)


def test_the_blocks_keep_what_one_long_float32_sum_rounds_away():
    """Eight blocks of 192 products: the first block's products are 2^16 (a sum of 192 * 2^16 = 1.5 * 2^23,
    where float32's spacing is 1), the rest a quarter each. One running sum would round every quarter
    away; a block's 192 quarters make 48, which the total keeps, block after block: exactly 1.5 * 2^23 +
    7 * 48 (+ the bias)."""
    channels = 8 * kernels.BLOCK
    x = torch.ones(3, channels)
    weight = torch.full((2, channels), 0.25)
    weight[:, :kernels.BLOCK] = 2.0 ** 16
    bias = torch.tensor([1.0, -2.0])
    expected = torch.tensor([1.5 * 2 ** 23 + 7 * 48 + 1, 1.5 * 2 ** 23 + 7 * 48 - 2]).expand(3, 2)
    with torch.no_grad():
        assert torch.equal(kernels.blocked_linear(x, weight, bias), expected)
        # GELU comes after the whole sum (here it is the identity: every sum is large and positive)
        assert torch.equal(kernels.blocked_linear(x, weight, bias, gelu="none"), expected)


@pytest.mark.parametrize("shape", [(5, 100, 7), (37, 384, 1536), (64, 1536, 384), (9, 200, 33)])
def test_the_blocked_kernel_computes_the_linear_layer(shape):
    """Against the float64 product, within F.linear's own rounding, with GELU fused or not, and with an input
    that is a column slice of a larger matrix."""
    rows, fan_in, fan_out = shape
    generator = torch.Generator().manual_seed(fan_in)
    x = torch.randn(rows, fan_in + 3, generator=generator)[:, 3:]
    weight, bias = torch.randn(fan_out, fan_in, generator=generator), torch.randn(fan_out, generator=generator)
    exact = F.linear(x.double(), weight.double(), bias.double())
    with torch.no_grad():
        for gelu in (None, "none", "tanh"):
            expected = exact if gelu is None else F.gelu(exact, approximate=gelu)
            got = kernels.blocked_linear(x, weight, bias, gelu)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got.double(), expected, atol=2e-4, rtol=1e-5)


def test_the_weight_blocks_follow_the_weight():
    """Cut once per weight (the same tensors again), and again after an in-place change (an optimizer step), a
    new ``.data``, or in inference mode, where a tensor keeps no version; freed with the weight."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 500, generator=generator)
    weight = torch.nn.Parameter(torch.randn(6, 500, generator=generator))
    with torch.no_grad():
        first = kernels.weight_blocks(weight)
        assert [block.shape[1] for block in first] == [192, 192, 116]
        assert all(a is b for a, b in zip(kernels.weight_blocks(weight), first, strict=True))
        weight.mul_(-2)  # an optimizer step
        torch.testing.assert_close(kernels.blocked_linear(x, weight, None), x @ weight.t(), atol=1e-4, rtol=1e-5)
        weight.data = torch.randn(6, 500, generator=generator)
        torch.testing.assert_close(kernels.blocked_linear(x, weight, None), x @ weight.t(), atol=1e-4, rtol=1e-5)
    with torch.inference_mode():
        made_here = torch.randn(6, 500)
        assert kernels.weight_version(made_here) is None
        torch.testing.assert_close(kernels.blocked_linear(x, made_here, None), x @ made_here.t(), atol=1e-4,
                                   rtol=1e-5)
        made_here.add_(1)
        torch.testing.assert_close(kernels.blocked_linear(x, made_here, None), x @ made_here.t(), atol=1e-4,
                                   rtol=1e-5)
    key = id(weight)
    assert key in kernels.WEIGHT_BLOCKS
    del weight
    gc.collect()
    assert key not in kernels.WEIGHT_BLOCKS


def test_a_fast_model_on_the_blocked_kernel_trains_like_the_reference(monkeypatch):
    """Layers wider than a block, forward and backward (F.linear's backward), against the reference path."""
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, "blocked")
    torch.manual_seed(4)
    ref = BertModel(WIDE).eval()
    with torch.no_grad():
        for module in ref.modules():
            if isinstance(module, torch.nn.Linear):
                module.bias.normal_(0, 0.1)
    fast = convert(ref, "fast")
    ids = torch.randint(5, 60, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    real = mask.bool()
    outs, grads = {}, {}
    for name, model in (("ref", ref), ("fast", fast)):
        out = model(ids, mask).last_hidden_state[real]
        out.square().sum().backward()
        outs[name] = out
        grads[name] = [model.blocks[1].ffn_out.weight.grad, model.blocks[1].ffn_in.bias.grad]
    torch.testing.assert_close(outs["fast"], outs["ref"], atol=1e-5, rtol=1e-4)
    for fast_grad, ref_grad in zip(grads["fast"], grads["ref"], strict=True):
        torch.testing.assert_close(fast_grad, ref_grad, atol=1e-4, rtol=1e-3)

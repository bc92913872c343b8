"""The blocked kernel (minibert/paths/kernels.py): oneDNN's float32 products summed in blocks of input
channels, as a BLAS sums them. Values against hand-computed sums and the reference path."""

from __future__ import annotations

import gc
import types

import pytest
import torch
import torch.nn.functional as F

from minibert.paths import kernels, onednn, weight_forms

pytestmark = pytest.mark.skipif(onednn.ONEDNN_OP is None, reason="this torch build has no oneDNN linear")

def test_the_blocks_keep_what_one_long_float32_sum_rounds_away():
    """Eight blocks of 192 products: the first block's products are 2^16 (a sum of 192 * 2^16 = 1.5 * 2^23,
    where float32's spacing is 1), the rest a quarter each. One running sum would round every quarter
    away; a block's 192 quarters make 48, which the total keeps, block after block: exactly 1.5 * 2^23 +
    7 * 48 (+ the bias)."""
    channels = 8 * onednn.BLOCK
    x = torch.ones(3, channels)
    weight = torch.full((2, channels), 0.25)
    weight[:, :onednn.BLOCK] = 2.0 ** 16
    bias = torch.tensor([1.0, -2.0])
    expected = torch.tensor([1.5 * 2 ** 23 + 7 * 48 + 1, 1.5 * 2 ** 23 + 7 * 48 - 2]).expand(3, 2)
    with torch.no_grad():
        assert torch.equal(onednn.blocked_linear(x, weight, bias), expected)
        # GELU comes after the whole sum (here it is the identity: every sum is large and positive)
        assert torch.equal(onednn.blocked_linear(x, weight, bias, gelu="none"), expected)


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
            got = onednn.blocked_linear(x, weight, bias, gelu)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got.double(), expected, atol=2e-4, rtol=1e-5)


def test_the_blocks_are_of_equal_widths_of_at_most_one_block():
    """200 channels are two blocks of 100, not 192 and 8 (a last block of a few channels sums as coarsely as
    oneDNN's whole row); 1,536 are eight of 192."""
    generator = torch.Generator().manual_seed(0)
    for fan_in, widths in ((200, [100, 100]), (1536, [192] * 8), (400, [133, 133, 134])):
        weight = torch.randn(3, fan_in, generator=generator)
        weight_forms.KEPT.clear()
        with torch.no_grad():
            onednn.blocked_linear(torch.randn(2, fan_in, generator=generator), weight, None)
            seen = [block.shape[1] for block in weight_forms.KEPT[id(weight.untyped_storage())][1]]
        assert seen == widths


def test_the_weight_blocks_follow_the_weight():
    """Kept between inference calls (the same tensors again), and cut again after an in-place change, a new
    ``.data`` (also at the address the old one freed), a new layout of the same storage, or in inference
    mode, where a tensor keeps no version; dropped with the weight's storage (a one-row weight's blocks are
    not views of it, which would keep it alive)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 500, generator=generator)
    weight = torch.nn.Parameter(torch.randn(6, 500, generator=generator))

    def check(w: torch.Tensor) -> None:
        torch.testing.assert_close(onednn.blocked_linear(x, w, None), x @ w.t(), atol=1e-4, rtol=1e-5)

    def kept(w: torch.Tensor) -> list[torch.Tensor]:
        return weight_forms.KEPT[id(w.untyped_storage())][1]

    with torch.no_grad():
        check(weight)
        first = kept(weight)
        check(weight)
        assert all(a is b for a, b in zip(kept(weight), first, strict=True))
        weight.mul_(-2)
        check(weight)
        for _ in range(5):  # a new storage, often at the address the old one freed (the version stays)
            new = torch.randn(6, 500, generator=generator)
            weight.data = torch.empty(0)
            weight.data = new.clone()
            check(weight)
        square = torch.nn.Parameter(torch.randn(500, 500, generator=generator))
        check(square)
        square.data = square.data.t()  # the same storage and address, read the other way
        check(square)
    with torch.inference_mode():
        made_here = torch.randn(6, 500)
        assert weight_forms.weight_version(made_here) is None
        check(made_here)
        made_here.add_(1)
        check(made_here)
    for rows in (6, 1):
        freed = torch.randn(rows, 500, generator=generator)
        with torch.no_grad():
            onednn.blocked_linear(x, freed, None)
        key = id(freed.untyped_storage())
        assert key in weight_forms.KEPT
        del freed
        gc.collect()
        assert key not in weight_forms.KEPT


@pytest.mark.parametrize("kernel", ["blocked", "onednn"])
def test_every_optimizer_step_is_seen_fused_ones_too(monkeypatch, kernel):
    """A fused AdamW step writes the weights without moving their version counters: a kept form is made again
    after any optimizer step, so evaluation between steps sees that step's weights. The training forward
    keeps nothing; its gradients (input, weight, bias) are F.linear's. A frozen layer's form is kept."""
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, kernel)
    generator = torch.Generator().manual_seed(1)
    layer, twin = torch.nn.Linear(400, 8), torch.nn.Linear(400, 8)
    twin.load_state_dict(layer.state_dict())
    probe = torch.randn(5, 8, generator=generator)  # a loss whose gradients are not all alike
    optimizers = [torch.optim.AdamW(model.parameters(), lr=0.1, fused=True) for model in (layer, twin)]
    for _ in range(3):
        x = torch.randn(5, 400, generator=generator)
        with torch.no_grad():  # evaluation: the cut is kept
            torch.testing.assert_close(kernels.cpu_linear(x, layer.weight, layer.bias), twin(x), atol=1e-4,
                                       rtol=1e-5)
        assert id(layer.weight.untyped_storage()) in weight_forms.KEPT
        inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
        ours, theirs = kernels.cpu_linear(inputs[0], layer.weight, layer.bias), twin(inputs[1])
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-5)
        (ours * probe).sum().backward()
        (theirs * probe).sum().backward()
        for mine, reference in ((inputs[0].grad, inputs[1].grad), (layer.weight.grad, twin.weight.grad),
                                (layer.bias.grad, twin.bias.grad)):
            torch.testing.assert_close(mine, reference, atol=1e-6, rtol=1e-6)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    fresh = torch.nn.Linear(400, 8)
    kernels.cpu_linear(x, fresh.weight, fresh.bias)
    assert id(fresh.weight.untyped_storage()) not in weight_forms.KEPT  # the training forward keeps nothing
    fresh.requires_grad_(False)
    kernels.cpu_linear(x, fresh.weight, fresh.bias)
    assert id(fresh.weight.untyped_storage()) in weight_forms.KEPT  # a frozen layer's form is kept, in grad mode too


@pytest.mark.parametrize("kernel", ["blocked", "onednn"])
@pytest.mark.parametrize("level_known", [True, False], ids=["level known", "private level missing"])
def test_forward_mode_gradients_are_f_linears(monkeypatch, kernel, level_known):
    """The kernels have no forward-mode formula: a dual tensor's linear runs F.linear, tangent and all, rather
    than dropping the tangent; also where torch lacks the private global that says a dual level is open."""
    import torch.autograd.forward_ad as forward_ad

    assert not kernels.forward_ad_open()
    if not level_known:  # kernels sees a forward_ad module without it
        monkeypatch.setattr(kernels, "forward_ad", types.SimpleNamespace(unpack_dual=forward_ad.unpack_dual))
        assert kernels.forward_ad_open()  # unknown: every input is checked for a tangent
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, kernel)
    generator = torch.Generator().manual_seed(3)
    x, tangent = torch.randn(5, 400, generator=generator), torch.randn(5, 400, generator=generator)
    weight, bias = torch.randn(8, 400, generator=generator), torch.randn(8, generator=generator)
    with forward_ad.dual_level():
        assert kernels.forward_ad_open()
        y = kernels.cpu_linear(forward_ad.make_dual(x, tangent), weight, bias, gelu="none")
        value, derivative = forward_ad.unpack_dual(y)
    assert derivative is not None
    torch.testing.assert_close(value, F.gelu(F.linear(x, weight, bias)))
    _, expected = torch.func.jvp(lambda t: F.gelu(F.linear(t, weight, bias)), (x,), (tangent,))
    torch.testing.assert_close(derivative, expected)


def test_a_strided_bias_or_weight_is_read_as_it_is():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(7, 300, generator=generator)
    weight = torch.randn(600, 16, generator=generator).t()  # (16, 600), transposed
    weight = weight[:, ::2]  # (16, 300), every other column
    bias = torch.randn(32, generator=generator)[::2]
    with torch.no_grad():
        for kernel in (onednn.onednn_linear, onednn.blocked_linear):
            torch.testing.assert_close(kernel(x, weight, bias), F.linear(x, weight, bias), atol=1e-4, rtol=1e-5)


def test_torch_compile_runs_a_fast_linear_layer_on_the_blocked_kernel(monkeypatch):
    """Under torch.compile (inductor) the fast path's linear layers are F.linear's, which inductor lowers
    itself: in inference and in training, nothing kept."""
    from minibert.paths.fast import FastLinear

    monkeypatch.setitem(kernels.CHOSEN, torch.float32, "blocked")
    weight_forms.KEPT.clear()
    torch.manual_seed(5)
    layer = FastLinear(400, 8)
    compiled = torch.compile(layer)
    x = torch.randn(5, 400)
    expected = F.linear(x, layer.weight, layer.bias)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), expected, atol=1e-5, rtol=1e-5)
    compiled(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, x.sum(0).expand(8, 400), atol=1e-5, rtol=1e-5)
    assert not weight_forms.KEPT


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onednn_runs_a_kept_weight_packed_with_the_same_numbers(dtype):
    """In inference a weight's packed form is made once and kept (oneDNN's own layout), and gives the plain
    weight's numbers bit for bit, GELU fused or not; it is packed again after the weight changes in place."""
    if dtype == torch.bfloat16 and dtype in onednn.ONEDNN_FAILED:
        pytest.skip("oneDNN's bf16 linear failed on this CPU")
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(37, 384, generator=generator).to(dtype)
    weight = torch.nn.Parameter(torch.randn(1536, 384, generator=generator).to(dtype))
    bias = torch.randn(1536, generator=generator).to(dtype)
    weight_forms.KEPT.clear()
    with torch.no_grad():
        for gelu in (None, "none", "tanh"):
            assert torch.equal(onednn.onednn_linear(x, weight, bias, gelu),
                               onednn.onednn_linear(x, weight, bias, gelu, keep=False))
        form = weight_forms.KEPT[id(weight.untyped_storage())][1]
        assert form.is_mkldnn == (onednn.PACK_OP is not None)
        assert torch.equal(onednn.onednn_linear(x, weight, bias), onednn.onednn_linear(x, weight, bias, keep=False))
        assert weight_forms.KEPT[id(weight.untyped_storage())][1] is form  # kept, not packed again
        before = onednn.onednn_linear(x, weight, None)
        weight.mul_(-1)
        assert torch.equal(onednn.onednn_linear(x, weight, None), -before)
        assert weight_forms.KEPT[id(weight.untyped_storage())][1] is not form


def test_without_packing_or_its_op_the_plain_weight_runs(monkeypatch):
    """Where packing fails for a dtype (said once; the other dtypes still pack), oneDNN runs the plain weight, and
    nothing keeps the weight alive; where oneDNN's linear fails on a packed weight, F.linear runs the plain weight
    it came from: the same numbers either way."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(9, 200, generator=generator)
    weight, bias = torch.randn(30, 200, generator=generator), torch.randn(30, generator=generator)
    expected = onednn.onednn_linear(x, weight, bias, keep=False)
    real_pack = onednn.PACK_OP

    def fails(*args):
        raise RuntimeError("no packing here")

    monkeypatch.setattr(onednn, "PACK_FAILED", set())
    with torch.no_grad():
        monkeypatch.setattr(onednn, "PACK_OP", fails)
        weight_forms.KEPT.clear()
        with pytest.warns(onednn.KernelFallback, match="oneDNN's weight packing in torch.float32 failed"):
            got = onednn.onednn_linear(x, weight, bias)
        assert torch.equal(got, expected) and onednn.PACK_FAILED == {torch.float32}
        key = id(weight.untyped_storage())
        assert weight_forms.KEPT[key][1] is None  # nothing of the weight's kept: it is freed with its storage
        del weight
        gc.collect()
        assert key not in weight_forms.KEPT
        monkeypatch.setattr(onednn, "PACK_OP", real_pack)
        monkeypatch.setattr(onednn, "PACK_FAILED", set())
        weight = torch.randn(30, 200, generator=torch.Generator().manual_seed(5))
        onednn.onednn_linear(x, weight, bias)  # packed and kept
        monkeypatch.setattr(onednn, "ONEDNN_OP", fails)
        monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
        with pytest.warns(onednn.KernelFallback, match="no packing here"):
            torch.testing.assert_close(onednn.onednn_linear(x, weight, bias), F.linear(x, weight, bias))


@pytest.mark.parametrize(("dtype", "kernel"), [(torch.float32, "blas"), (torch.float32, "onednn"),
                                                 (torch.float32, "blocked"), (torch.bfloat16, "blas"),
                                                 (torch.bfloat16, "onednn"), (torch.bfloat16, "upcast")])
def test_a_residual_is_added_inside_onednns_product_and_after_the_others(monkeypatch, kernel, dtype):
    """residual + linear(x), a post-LN block's sum: oneDNN adds it inside its product in inference (rounded once,
    so at least as close to the exact sum as the linear rounded and then added), every other kernel after its
    product, bit for bit as the block added it before; under autograd every kernel adds it after, and the
    residual gets its gradient."""
    if kernel == "onednn" and dtype in onednn.ONEDNN_FAILED:
        pytest.skip(f"oneDNN's {dtype} linear failed on this CPU")
    monkeypatch.setitem(kernels.CHOSEN, dtype, kernel)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(37, 400, generator=generator).to(dtype)
    weight = torch.randn(384, 400, generator=generator).to(dtype) / 20
    bias = torch.randn(384, generator=generator).to(dtype)
    residual = torch.randn(37, 384, generator=generator).to(dtype)
    added_ops = []
    if onednn.ONEDNN_ADD_OP is not None:
        real = onednn.ONEDNN_ADD_OP
        monkeypatch.setattr(onednn, "ONEDNN_ADD_OP", lambda *args: added_ops.append(1) or real(*args))
    with torch.no_grad():
        got = kernels.cpu_linear(x, weight, bias, residual=residual)
        after = residual + kernels.cpu_linear(x, weight, bias)
    assert got.dtype == dtype
    if kernel == "onednn" and onednn.ONEDNN_ADD_OP is not None:
        assert added_ops == [1]
        exact = residual.double() + F.linear(x.double(), weight.double(), bias.double())
        assert (got.double() - exact).abs().mean() <= (after.double() - exact).abs().mean()
        unit = torch.finfo(dtype).eps * float(after.abs().max())  # one unit in the last place at the largest value
        torch.testing.assert_close(got, after, rtol=0, atol=unit)
    else:
        assert added_ops == [] and torch.equal(got, after)
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias, residual)]
    kernels.cpu_linear(*leaves[:3], residual=leaves[3]).float().square().sum().backward()
    expected = [t.detach().requires_grad_() for t in (x, weight, bias, residual)]
    (expected[3] + F.linear(*expected[:3])).float().square().sum().backward()
    for leaf, reference in zip(leaves, expected, strict=True):
        torch.testing.assert_close(leaf.grad, reference.grad, rtol=2e-2, atol=2e-2 * float(reference.grad.abs().max()))


def test_where_the_add_inside_the_product_fails_or_cannot_run_the_linear_and_the_add_run(monkeypatch):
    """A residual that broadcasts (not of the output's shape) is added after the product; where the op that adds
    inside fails (said once), oneDNN's product still runs, then the add, and the op is not tried again."""
    generator = torch.Generator().manual_seed(7)
    x, weight = torch.randn(9, 200, generator=generator), torch.randn(30, 200, generator=generator)
    bias, residual = torch.randn(30, generator=generator), torch.randn(9, 30, generator=generator)
    calls = []
    plain_op = onednn.ONEDNN_OP

    def fails(*args):
        calls.append("add")
        raise RuntimeError("no binary post-op here")

    monkeypatch.setattr(onednn, "ONEDNN_ADD_OP", fails)
    monkeypatch.setattr(onednn, "ONEDNN_OP", lambda *args: calls.append("plain") or plain_op(*args))
    monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
    monkeypatch.setattr(onednn, "ADD_FAILED", set())
    with torch.no_grad():
        for broadcast in (residual[0], residual[:, :1]):
            torch.testing.assert_close(onednn.onednn_linear(x, weight, bias, residual=broadcast),
                                       broadcast + F.linear(x, weight, bias))
        assert calls == ["plain", "plain"]
        with pytest.warns(onednn.KernelFallback, match="with an add inside in torch.float32 failed"):
            got = onednn.onednn_linear(x, weight, bias, residual=residual)
        torch.testing.assert_close(got, residual + F.linear(x, weight, bias))
        torch.testing.assert_close(onednn.onednn_linear(x, weight, bias, residual=residual), got)
    assert calls == ["plain", "plain", "add", "plain", "plain"]
    assert onednn.ADD_FAILED == {torch.float32} and not onednn.ONEDNN_FAILED

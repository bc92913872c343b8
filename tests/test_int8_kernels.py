"""The int8 path's product kernels (minibert.paths.int8_kernels): each exact, each scaled the same way, the
choice among them by measuring, and the fallbacks when a private op fails."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

from minibert import SentenceEncoder
from minibert.paths import int8_kernels, kernels, onednn


def test_int8_products_fall_back_to_exact_float64_and_say_so_once(monkeypatch):
    a = torch.randint(-127, 128, (33, 1536), dtype=torch.int8)
    b = torch.randint(-127, 128, (1536, 40), dtype=torch.int8)
    exact = a.long() @ b.long()
    assert torch.equal(int8_kernels.int8_matmul(a, b).long(), exact)
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("_int_mm: not supported on this CPU")

    monkeypatch.setattr(int8_kernels, "INT_MM", broken)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):  # wrong inputs: their own error, op kept
        int8_kernels.int8_matmul(a, a)
    assert int8_kernels.INT_MM is broken
    calls.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = int8_kernels.int8_matmul(a, b), int8_kernels.int8_matmul(a, b)
    assert len(calls) == 1 and int8_kernels.INT_MM is None
    assert [str(w.message) for w in caught if issubclass(w.category, onednn.KernelFallback)] == [
        "torch._int_mm failed (_int_mm: not supported on this CPU); the fast path falls back to the public torch "
        "functions"]
    assert first.dtype == torch.int32 and torch.equal(first.long(), exact) and torch.equal(second, first)


def onednn_is_exact_here() -> bool:
    """Whether oneDNN's int8 linear gives exact products on this CPU (with VNNI or AMX it does; without, its
    u8 x s8 pair sums saturate at 16 bits): the check measure_int8 makes."""
    return "onednn" in int8_kernels.exact_kernels()


def test_float32_int8_products_are_exact_past_two_to_the_24():
    """float32 holds integers only up to 2^24: rows longer than 1,024 channels are cut into exact pieces."""
    generator = torch.Generator().manual_seed(3)
    q = torch.randint(-128, 128, (9, 3072), dtype=torch.int8, generator=generator)
    w = torch.randint(-127, 128, (3072, 5), dtype=torch.int8, generator=generator)
    q[0], w[:, 0], w[:, 1] = -128, -127, 127  # row 0 times column 0: 3072 * 128 * 127, past 2^24
    # row 1 times column 2: odd products whose running sum passes 2^24 and comes back below it, where a
    # float32 sum rounds on the way (multiples of 128 * 127, as in row 0, would not show that)
    q[1] = 127
    w[:1536, 2] = torch.randint(100, 128, (1536,), generator=generator)
    w[1536:, 2] = -torch.randint(100, 128, (1536,), generator=generator)
    exact = q.long() @ w.long()
    assert exact.abs().max() > 2 ** 24
    got = int8_kernels.float32_int8_product(q, w.float())
    assert torch.equal(got, exact.float())  # as exact as int32's result once it is turned into float32
    assert not torch.equal(q.float() @ w.float(), exact.float())  # what the pieces of 1,024 channels avoid


@pytest.mark.parametrize("kernel", ["int_mm", "float32", "onednn"])
def test_every_int8_kernel_scales_its_columns_as_float32_does(kernel):
    """int8_product(..., column_scale) is the exact product made float32, times the scale once: bit for bit
    the same on every kernel (oneDNN scales inside its kernel), sums past 2^24 included."""
    if kernel == "onednn" and not onednn_is_exact_here():
        pytest.skip("oneDNN's int8 products are not exact on this CPU (no VNNI or AMX): never chosen here")
    generator = torch.Generator().manual_seed(4)
    q = torch.randint(-128, 128, (37, 3072), dtype=torch.int8, generator=generator)
    w = torch.randint(-127, 128, (3072, 48), dtype=torch.int8, generator=generator)
    q[0], w[:, 0] = -128, -127  # 3072 * 128 * 127, past 2^24 (but a multiple of 2^17: float32 holds it)
    # row 1 times column 1: about 4e7, where float32's spacing is 4: the integer rounds once, as float32
    q[1], w[:, 1] = (torch.randint(100, 128, (3072,), dtype=torch.int8, generator=generator) for _ in "qw")
    exact = int8_kernels.exact_int8_matmul(q, w)
    assert exact[1, 1] > 2 ** 25 and exact.float()[1, 1].long() != exact[1, 1]
    column_scale = torch.rand(48, generator=generator) / 100
    packed = {"int_mm": None, "float32": w.float(), "onednn": int8_kernels.onednn_pack(w)}[kernel]
    got = int8_kernels.int8_product(q, w, packed, column_scale)
    assert torch.equal(got, exact.float() * column_scale)
    assert torch.equal(int8_kernels.int8_product(q, w, packed), int8_kernels.exact_int8_matmul(q, w).float())


@pytest.mark.parametrize("kernel", ["float32", "onednn"])
def test_every_int8_kernel_gives_the_embeddings_of_int_mm(monkeypatch, minilm_dir, sentences, kernel):
    """The int8 products are exact on every kernel the measurement may choose, so the embeddings are the same
    numbers whichever runs. oneDNN only where it is exact on this CPU; where it is not, it is never chosen."""
    if kernel == "onednn" and not onednn_is_exact_here():
        assert int8_kernels.measure_int8() != "onednn"
        return
    encoder = SentenceEncoder.from_pretrained(minilm_dir)
    outputs = {}
    for name in ("int_mm", kernel):
        monkeypatch.setitem(kernels.CHOSEN, torch.int8, name)
        int8 = encoder.to_path("int8")
        packed_as = {"int_mm": type(None), "float32": torch.Tensor, "onednn": tuple}[name]
        assert all(isinstance(m.packed, packed_as) for m in int8.modules() if hasattr(m, "packed"))
        outputs[name] = int8.encode(sentences, convert_to="torch")
    assert torch.equal(outputs[kernel], outputs["int_mm"])


def exact_qlinear_ops(off_by: int = 0):
    """Stand-ins for oneDNN's prepack and int8 linear, exact (or off by ``off_by``) on any CPU, so that the
    choice among kernels is tested where the real op is missing or inexact too."""
    def product(unsigned, x_scale, x_zero_point, weight, w_scale, *rest):
        exact = (unsigned.long() - x_zero_point) @ weight.long().t()
        return (exact + off_by).float() * w_scale

    return (lambda weight, bias: weight.clone()), product


def kind(packed) -> str:
    return "int_mm" if packed is None else "float32" if isinstance(packed, torch.Tensor) else "onednn"


@pytest.mark.parametrize(("seconds", "chosen"), [
    ({"int_mm": 0.02, "float32": 0.1, "onednn": 0.02}, "onednn"),  # a tie: oneDNN's, the default where exact
    ({"int_mm": 0.02, "float32": 0.1, "onednn": 0.022}, "onednn"),  # int_mm faster, but not by 1.25x
    ({"int_mm": 0.02, "float32": 0.1, "onednn": 0.1}, "int_mm"),  # int_mm faster by 5x
    ({"int_mm": 0.1, "float32": 0.02, "onednn": 0.1}, "float32"),
])
def test_onednn_is_the_default_int8_kernel_where_exact(monkeypatch, seconds, chosen):
    """Each kernel timed as the layers call it (through int8_product, with the weight's scales); oneDNN's
    unless another is faster by MARGIN."""
    monkeypatch.setattr(int8_kernels, "QLINEAR_OPS", exact_qlinear_ops())
    monkeypatch.setattr(int8_kernels, "int8_product",
                        lambda q, w, packed, scale: time.sleep(seconds[kind(packed)] / 8))
    assert int8_kernels.measure_int8(rounds=3) == chosen  # (sleeps: a busy machine only adds to each)


def test_an_inexact_int8_kernel_is_never_chosen(monkeypatch):
    monkeypatch.setattr(int8_kernels, "QLINEAR_OPS", exact_qlinear_ops(off_by=1))  # oneDNN off by one
    monkeypatch.setattr(int8_kernels, "int8_product",
                        lambda q, w, packed, scale: time.sleep(0.2 if kind(packed) == "int_mm" else 0.001))
    assert int8_kernels.measure_int8(rounds=1) == "float32"  # the fastest exact one
    product = int8_kernels.float32_int8_product  # float32 off by one too: int_mm, slow as it is
    monkeypatch.setattr(int8_kernels, "float32_int8_product", lambda q, w: product(q, w) + 1)
    assert int8_kernels.measure_int8(rounds=1) == "int_mm"


def test_onednn_failing_while_timed_is_not_chosen(monkeypatch):
    """oneDNN passes the exactness test but fails on the timed shapes: int8_product falls back (and clears
    QLINEAR_OPS); it must not be chosen, and a weight packed afterwards takes int_mm's form."""
    monkeypatch.setattr(int8_kernels, "QLINEAR_OPS", exact_qlinear_ops())

    def product(q, w, packed, scale):
        if kind(packed) == "onednn":  # fast, since it did nothing
            int8_kernels.QLINEAR_OPS = None  # what int8_product does after saying so
        else:
            time.sleep(0.002)
    monkeypatch.setattr(int8_kernels, "int8_product", product)
    assert int8_kernels.measure_int8(rounds=1) != "onednn"
    monkeypatch.setitem(kernels.CHOSEN, torch.int8, "onednn")  # chosen before oneDNN failed in a forward
    assert int8_kernels.pack_int8_weight(torch.ones(4, 3, dtype=torch.int8)) is None


def test_a_failing_onednn_int8_product_falls_back_once(monkeypatch):
    q = torch.randint(-127, 128, (8, 32), dtype=torch.int8)
    w = torch.randint(-127, 128, (32, 16), dtype=torch.int8)

    def broken(*args):
        raise RuntimeError("qlinear: no such kernel")

    monkeypatch.setattr(int8_kernels, "QLINEAR_OPS", (broken, broken))
    scale = torch.rand(16)
    with pytest.warns(onednn.KernelFallback, match="oneDNN's int8 linear failed"):
        scaled = int8_kernels.int8_product(q, w, ("packed", None, None), scale)  # the fallback scales as well
    got = int8_kernels.int8_product(q, w, packed=("packed", None, None))
    assert int8_kernels.QLINEAR_OPS is None
    assert torch.equal(got, int8_kernels.exact_int8_matmul(q, w).float())
    assert torch.equal(scaled, got * scale)
    assert torch.equal(int8_kernels.int8_product(q, w, packed=("packed", None, None)), got)  # no second try

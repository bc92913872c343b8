"""How the fast path's CPU kernels are chosen (minibert/paths/kernels.py, attention_kernels.py, choices.py):
measured once per process among the kernels as accurate as F.linear, forced by the environment, carried
between processes as strings. Timings are faked where the rule, not the CPU, is under test."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
import torch.nn.functional as F

from minibert.paths import attention_kernels, choices, kernels, onednn, weight_forms


def test_the_kernel_is_measured_once_and_the_default_wins_ties(monkeypatch):
    fakes = {name: (lambda x, w, b, gelu=None: F.linear(x, w, b)) for name in ("blas", "onednn", "blocked", "upcast")}
    timings = {fakes["blas"]: 1.0, fakes["onednn"]: 0.85, fakes["blocked"]: 0.9, fakes["upcast"]: 0.5}
    for name, fake in fakes.items():
        monkeypatch.setitem(kernels.LINEARS, name, fake)
    monkeypatch.setattr(kernels, "seconds", lambda kernel, args: timings[kernel])
    monkeypatch.setattr(onednn, "ONEDNN_OP", object())  # a oneDNN op exists, and works in every dtype
    monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
    monkeypatch.setattr(kernels, "CHOSEN", {})
    monkeypatch.delenv("MINIBERT_CPU_LINEAR", raising=False)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    assert kernels.linear_kernel(torch.float32) == "blas"  # 15% faster is within the noise
    assert torch.equal(torch.get_rng_state(), state)  # the global random state (dropout's) is untouched
    timings[fakes["onednn"]] = 0.5
    assert kernels.linear_kernel(torch.float32) == "blas"  # measured once: the first answer stays
    assert kernels.measure([(torch.randn(4, 8), torch.randn(3, 8), None, None)]) == "onednn"
    assert kernels.linear_kernel(torch.bfloat16) == "onednn"  # bf16's default, as fast as the fastest (upcast)
    monkeypatch.setattr(onednn, "ONEDNN_OP", None)
    assert kernels.candidates(torch.float32) == ["blas"] and kernels.candidates(torch.bfloat16) == ["blas", "upcast"]


def test_in_bfloat16_onednn_is_the_default_and_kernels_are_timed_as_the_layers_call_them(monkeypatch):
    """In bf16 oneDNN's kernel (its weights packed, the bias and GELU inside its product) runs unless another beats
    it by MARGIN; in float32 F.linear does. Each is timed on products with a bias, the first with its GELU."""
    fakes = {name: (lambda x, w, b, gelu=None: F.linear(x, w, b)) for name in ("blas", "onednn", "blocked", "upcast")}
    timings = {fakes["blas"]: 0.9, fakes["onednn"]: 1.0, fakes["blocked"]: 0.8, fakes["upcast"]: 2.0}
    timed = []
    for name, fake in fakes.items():
        monkeypatch.setitem(kernels.LINEARS, name, fake)
    monkeypatch.setattr(kernels, "seconds", lambda kernel, args: timed.append(args) or timings[kernel])
    monkeypatch.setattr(onednn, "ONEDNN_OP", object())
    monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
    monkeypatch.setattr(kernels, "CHOSEN", {})
    monkeypatch.delenv("MINIBERT_CPU_LINEAR", raising=False)
    assert kernels.linear_kernel(torch.float32) == "blas"  # blocked 1.125x faster: within the noise
    assert kernels.linear_kernel(torch.bfloat16) == "onednn"  # F.linear 1.11x faster: within the noise
    assert {(x.shape[1], b is not None, gelu) for x, w, b, gelu in timed} == {(384, True, "none"), (1536, True, None)}
    timings[fakes["blas"]] = 0.75
    assert kernels.measure([(torch.randn(4, 8).bfloat16(), torch.randn(3, 8).bfloat16(), None, None)]) == "blas"
    def coarse(x, w, b, gelu=None):  # further from the exact product than F.linear
        return F.linear(x.round(), w, b)

    monkeypatch.setitem(kernels.LINEARS, "onednn", coarse)  # so not a candidate: F.linear is the default
    timings[coarse], timings[fakes["blas"]] = 0.1, 1.0
    assert kernels.measure([(torch.randn(4, 8).bfloat16(), torch.randn(3, 8).bfloat16(), None, None)]) == "blas"
    monkeypatch.setattr(onednn, "ONEDNN_OP", None)  # without oneDNN's op: F.linear is the default again
    timings[fakes["blas"]], timings[fakes["upcast"]] = 1.0, 0.85
    assert kernels.measure([(torch.randn(4, 8).bfloat16(), torch.randn(3, 8).bfloat16(), None, None)]) == "blas"


def test_a_faster_kernel_that_rounds_further_from_the_exact_product_is_not_chosen(monkeypatch):
    """Speed is not bought with accuracy: a kernel twice as fast whose products are further from float64's
    (here: inputs rounded to bf16 first) loses to F.linear."""
    def coarse(x, w, b, gelu=None):
        return F.linear(x.bfloat16().float(), w.bfloat16().float(), b)

    for name in ("onednn", "blocked"):
        monkeypatch.setitem(kernels.LINEARS, name, coarse)
    monkeypatch.setattr(onednn, "ONEDNN_OP", object())
    monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
    monkeypatch.setattr(kernels, "seconds", lambda kernel, args: 0.5 if kernel is coarse else 1.0)
    x, w = torch.randn(64, 96), torch.randn(32, 96)
    assert kernels.measure([(x, w, None, None)]) == "blas"
    monkeypatch.setitem(kernels.LINEARS, "blocked", lambda x, w, b, gelu=None: F.linear(x, w, b))
    monkeypatch.setattr(kernels, "seconds", lambda kernel, args: 0.5 if kernel is kernels.LINEARS["blocked"] else 1.0)
    assert kernels.measure([(x, w, None, None)]) == "blocked"  # as accurate and twice as fast

    def coarse_when_wide(x, w, b, gelu=None):  # as accurate as F.linear on the first product, not on the second
        return coarse(x, w, b) if x.shape[1] > 100 else F.linear(x, w, b)

    monkeypatch.setitem(kernels.LINEARS, "blocked", coarse_when_wide)
    monkeypatch.setattr(kernels, "seconds", lambda kernel, args: 0.5 if kernel is coarse_when_wide else 1.0)
    assert kernels.measure([(x, w, None, None)]) == "blocked"
    assert kernels.measure([(x, w, None, None), (torch.randn(64, 384), torch.randn(32, 384), None, None)]) == "blas"


def test_a_kernel_that_fails_while_measured_is_left_out_for_that_dtype_only(monkeypatch):
    """oneDNN without bf16 instructions: measuring bf16 drops it, quietly, and float32 keeps it."""
    def bf16_refused(x, w, b, *args):
        if x.dtype == torch.bfloat16:
            raise RuntimeError("could not create a primitive descriptor")
        return F.linear(x, onednn.plain(w), b)  # (upcast's float32 weights come packed, as the real op takes them)

    monkeypatch.setattr(onednn, "ONEDNN_OP", bf16_refused)
    monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
    monkeypatch.setattr(kernels, "CHOSEN", {torch.float32: "onednn"})
    monkeypatch.delenv("MINIBERT_CPU_LINEAR", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", onednn.KernelFallback)
        assert kernels.linear_kernel(torch.bfloat16) in ("blas", "upcast")
    assert onednn.ONEDNN_FAILED == {torch.bfloat16}
    assert kernels.candidates(torch.float32) == ["blas", "onednn", "blocked"]
    x, w = torch.randn(8, 16), torch.randn(4, 16)
    calls = []
    monkeypatch.setattr(onednn, "ONEDNN_OP", lambda *args: calls.append(1) or F.linear(*args[:3]))
    monkeypatch.setattr(onednn, "PACK_OP", None)  # (the stand-in takes plain weights)
    kernels.cpu_linear(x, w, None)
    assert calls == [1]  # float32 still runs oneDNN


def test_the_kernel_can_be_named_in_the_environment(monkeypatch):
    monkeypatch.setattr(kernels, "CHOSEN", {})
    monkeypatch.setattr(kernels, "seconds", lambda kernel, args: pytest.fail("nothing is measured"))
    monkeypatch.setenv("MINIBERT_CPU_LINEAR", "upcast")  # upcast computes by float32's kernel, named too
    with pytest.raises(ValueError, match=r"MINIBERT_CPU_LINEAR='upcast' names no kernel for torch.float32"):
        kernels.linear_kernel(torch.bfloat16)
    monkeypatch.setenv("MINIBERT_CPU_LINEAR", "upcast, blas")
    assert kernels.linear_kernel(torch.bfloat16) == "upcast" and kernels.CHOSEN[torch.float32] == "blas"
    monkeypatch.setattr(kernels, "CHOSEN", {})
    monkeypatch.setenv("MINIBERT_CPU_LINEAR", "blas,mkl")
    with pytest.raises(ValueError, match=r"MINIBERT_CPU_LINEAR='blas,mkl': 'mkl' is not a kernel"):
        kernels.linear_kernel(torch.float32)


def test_kernel_choices_travel_as_strings_and_refuse_what_this_process_cannot_run(monkeypatch):
    """What a checkpoint carries (minibert.train.trainer.pin_kernels): taken over whatever the environment
    forces, and refused as a whole, naming the key, when one names no choice or a kernel not runnable here."""
    monkeypatch.setattr(onednn, "ONEDNN_OP", object())
    monkeypatch.setattr(onednn, "ONEDNN_FAILED", set())
    monkeypatch.setattr(kernels, "CHOSEN", {torch.float32: "blas"})
    monkeypatch.setattr(attention_kernels, "ATTENTION_CHOSEN", {torch.float32: "products", torch.float16: "sdpa"})
    assert choices.kernel_choices([torch.float32, torch.float16]) == {  # float16 linears are not chosen
        "attention:float16": "sdpa", "linear:float32": "blas", "attention:float32": "products"}
    monkeypatch.setenv("MINIBERT_CPU_ATTENTION", "products")
    choices.use_kernel_choices({"linear:float32": "onednn", "attention:bfloat16": "sdpa"})
    assert kernels.linear_kernel(torch.float32) == "onednn"
    assert attention_kernels.attention_kernel(torch.bfloat16) == "sdpa"
    for key in ("softmax:float32", "linear:float33", "linear:int8", "attention:int64"):
        with pytest.raises(ValueError, match=f"kernel choice '{key}': not a kernel this version chooses"):
            choices.use_kernel_choices({"linear:float32": "blas", key: "sdpa"})
        assert kernels.CHOSEN[torch.float32] == "onednn"  # nothing taken from a refused set
    monkeypatch.setattr(onednn, "ONEDNN_OP", None)  # a torch build without oneDNN's op
    for key, kernel in (("linear:float32", "mkl"), ("linear:float32", "upcast"), ("attention:float32", "flash"),
                        ("linear:bfloat16", "onednn")):
        with pytest.raises(ValueError, match=f"kernel choice '{key}': '{kernel}' is not one this process can run"):
            choices.use_kernel_choices({key: kernel})


def test_bfloat16_measured_first_in_a_process(monkeypatch):
    """Timing upcast runs float32's kernel, which a new process has not chosen yet: both get measured
    (this once waited forever for its own lock)."""
    monkeypatch.setattr(kernels, "CHOSEN", {})
    monkeypatch.delenv("MINIBERT_CPU_LINEAR", raising=False)
    chosen = []
    thread = threading.Thread(target=lambda: chosen.append(kernels.linear_kernel(torch.bfloat16)), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert chosen and chosen[0] in kernels.candidates(torch.bfloat16)
    assert kernels.CHOSEN[torch.float32] in kernels.candidates(torch.float32)


def test_upcast_stays_float32_under_autocast(monkeypatch):
    """Autocast would turn the float32 product back into an (emulated) bf16 one: upcast switches it off."""
    seen = []

    def recording(x, weight, bias, gelu=None):
        seen.append((x.dtype, weight.dtype, torch.is_autocast_enabled("cpu")))
        return onednn.blas_linear(x, weight, bias, gelu)

    monkeypatch.setitem(kernels.CHOSEN, torch.float32, "blas")
    monkeypatch.setitem(kernels.LINEARS, "blas", recording)
    x, w = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(3, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = kernels.upcast_linear(x, w, None)
    assert seen == [(torch.float32, torch.float32, False)] and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, torch.nn.functional.linear(x.float(), w.float()).bfloat16(), atol=0, rtol=0)


@pytest.mark.parametrize("float32_kernel", ["blas", "onednn", "blocked"])
def test_upcast_keeps_a_float32_copy_in_inference_that_follows_the_weight(monkeypatch, float32_kernel):
    """In inference the bf16 weight's float32 copy is made once and kept (with float32's packed form where its
    kernel keeps one), made again after an in-place change; a training step casts anew, so the gradient
    reaches the bf16 weight."""
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, float32_kernel)
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 400, generator=generator).bfloat16())
    x = torch.randn(5, 400, generator=generator).bfloat16()

    def in_float32() -> torch.Tensor:  # float32's kernel on a weight cast at this call
        return kernels.cpu_linear(x.float(), weight.float(), None, keep=False).bfloat16()

    weight_forms.KEPT.clear()
    with torch.no_grad():
        torch.testing.assert_close(kernels.upcast_linear(x, weight, None), in_float32(), atol=0, rtol=0)
        copy = weight_forms.KEPT[id(weight.untyped_storage())][1]
        assert copy.dtype == torch.float32 and torch.equal(copy, weight.float())
        kernels.upcast_linear(x, weight, None)
        assert weight_forms.KEPT[id(weight.untyped_storage())][1] is copy  # kept, not made again
        weight.mul_(-2)
        torch.testing.assert_close(kernels.upcast_linear(x, weight, None), in_float32(), atol=0, rtol=0)
    weight_forms.KEPT.clear()
    y = kernels.upcast_linear(x, weight, None)
    assert not weight_forms.KEPT
    y.float().sum().backward()
    torch.testing.assert_close(weight.grad, x.float().sum(0).expand(6, -1).bfloat16(), atol=0, rtol=0)


@pytest.mark.parametrize("float32_kernel", ["blas", "onednn"])
def test_a_float32_copy_kept_in_inference_mode_serves_a_later_backward(monkeypatch, float32_kernel):
    """encode runs in inference mode: the copy kept there is a plain tensor (with its own packed form where
    float32's kernel keeps one), so a frozen bf16 layer whose input needs a gradient trains after it; a weight
    cast at every call (``keep=False``, autocast's) is not kept."""
    monkeypatch.setitem(kernels.CHOSEN, torch.float32, float32_kernel)
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(6, 400, generator=generator).bfloat16(), requires_grad=False)
    x = torch.randn(5, 400, generator=generator).bfloat16()
    weight_forms.KEPT.clear()
    with torch.inference_mode():
        kernels.upcast_linear(x, weight, None)
    copy = weight_forms.KEPT[id(weight.untyped_storage())][1]
    assert not copy.is_inference()
    if float32_kernel == "onednn" and onednn.pack(copy) is not None:
        assert weight_forms.KEPT[id(copy.untyped_storage())][0][-1] == ("packed",)
    x.requires_grad_()
    kernels.upcast_linear(x, weight, None).float().sum().backward()
    torch.testing.assert_close(x.grad, weight.float().sum(0).expand(5, -1).bfloat16(), atol=0, rtol=0)
    weight_forms.KEPT.clear()
    with torch.no_grad():
        kernels.upcast_linear(x, weight, None, keep=False)
    assert not weight_forms.KEPT

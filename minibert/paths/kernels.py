"""The CPU matrix products of the fast path: which kernel runs, chosen by measuring on the CPU at hand. (oneDNN's
kernels, its private ops behind one function each with a public fallback, are in ``onednn.py``; the attention
is chosen the same way, ``attention_kernels.py``; the int8 path's exact kernels in ``int8_kernels.py``.)

Which kernel is fastest is a property of the CPU, not of the code, so nothing here assumes it:

- **float32**: the BLAS behind ``F.linear`` (MKL in the x86 wheels) or oneDNN's fused linear, whole or
  "blocked" (below); which wins differs from one x86 CPU to another. In inference oneDNN runs each weight in
  its own packed layout, made once and kept (``weight_forms.py``); a training step runs the plain weights.
- **bfloat16**: native bf16 products where the CPU has bf16 instructions (AVX512-BF16, AMX). Without them
  they are emulated, far slower than float32 ones; there float32 products rounded back ("upcast") give the
  same bf16 numbers faster, as OpenVINO does.

So the first CPU linear of each dtype times every candidate once per process, on MiniLM's two feed-forward
products as the layers run them; another kernel must beat the dtype's default (``default_kernel``) by
``MARGIN``. Speed is not bought with accuracy: a kernel whose error against float64 is over
``ACCURACY_MARGIN`` times ``F.linear``'s is no candidate. oneDNN's float32 kernel runs each output as one
long sum, whose rounding grows with its length, where a BLAS adds up short partial sums; the "blocked"
kernel does that with oneDNN's products (``blocked_linear``). A kernel that fails here is left out for that
dtype. Kernels agree to float rounding, not bit for bit: ``MINIBERT_CPU_LINEAR`` runs the same one in every
process (``blas``, ``onednn``, ``blocked``, for bf16 also ``upcast``; a list such as ``upcast,onednn`` gives
each dtype the first it can run). ``CHOSEN`` holds the choices; setting an entry forces one. A resumed
training run, like every rank of a DDP job, runs the kernels its first process chose (``choices.py``).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

from minibert.paths import onednn
from minibert.paths.onednn import KernelFallback, added, blas_linear, blocked_linear, onednn_linear, with_gelu
from minibert.paths.weight_forms import kept

CHOSEN: dict[torch.dtype, str] = {}  # dtype -> the kernel its CPU linears run: "blas", "onednn", "blocked", "upcast"
# (torch.int8: the int8 path's products, "int_mm", "float32" or "onednn", int8_kernels.py)
MARGIN = 1.25  # another kernel must beat the dtype's default (default_kernel) by this much: timings on a busy
# machine jitter, and a tie should not be decided differently by two processes
ACCURACY_MARGIN = 1.1  # and its mean error against float64 may be at most this times F.linear's (the products
# are fixed, so this part of the choice is the same in every process on a CPU)
LINEAR_DTYPES = (torch.float32, torch.bfloat16)  # the dtypes whose CPU linears are chosen (cpu_linear)
MEASURING = threading.Lock()  # one measurement at a time: two at once would time each other


def upcast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None,
                  keep: bool = True):
    """A bfloat16 linear computed in float32 (by float32's kernel), rounded back to bfloat16: the same
    result as a bf16 kernel that accumulates in float32, which is what they all do. (Autocast would cast
    the float32 product back to bf16: it is off in here.) In inference the weight's float32 copy is made once
    and kept (``weight_forms``), with its own packed form where float32's kernel keeps one, rather than cast
    at every batch (``keep``: the weight is worth keeping). Training casts it anew, so that gradients reach it."""
    bias = None if bias is None else bias.float()
    training = torch.is_grad_enabled() and weight.requires_grad
    wide = kept(weight, ("float32",), weight.float) if keep and not training else None
    keep = wide is not None  # (None: training, keep off, or a weight made in inference mode: cast at this call)
    with torch.autocast("cpu", enabled=False):
        return cpu_linear(x.float(), wide if keep else weight.float(), bias, gelu, keep=keep).to(x.dtype)


LINEARS: dict[str, Callable] = {"blas": blas_linear, "onednn": onednn_linear, "blocked": blocked_linear,
                                "upcast": upcast_linear}


def candidates(dtype: torch.dtype) -> list[str]:
    """The kernels worth timing for a dtype, the public one first. Blocks are for float32 only: a bf16
    result would be rounded to bf16 at every block."""
    names = ["blas"]
    if onednn.ONEDNN_OP is not None and dtype not in onednn.ONEDNN_FAILED:
        names += ["onednn", "blocked"] if dtype == torch.float32 else ["onednn"]
    return names + (["upcast"] if dtype == torch.bfloat16 else [])


def seconds(kernel: Callable, args: tuple) -> float:
    """One timing of four calls."""
    start = time.perf_counter()
    for _ in range(4):
        kernel(*args)
    return time.perf_counter() - start


def error(y: torch.Tensor, exact: torch.Tensor) -> float:
    """The mean |difference| of a kernel's product from the exact one."""
    return float((y.double() - exact).abs().mean())


def default_kernel(dtype: torch.dtype, names: list[str]) -> str:
    """The kernel that runs unless another beats it by ``MARGIN``: ``F.linear``, but in bf16 oneDNN's where it
    is one of ``names`` (it runs there, as accurately). Both run bf16 products on oneDNN, but F.linear's take
    each weight as it is, copy the bias into the output first and run GELU as a pass of its own."""
    return "onednn" if dtype == torch.bfloat16 and "onednn" in names else "blas"


@torch.no_grad()
def measure(products: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str | None]],
            rounds: int = 5) -> str:
    """The fastest kernel for these products, each (x, weight, bias, gelu) as a layer calls it, among those as
    accurate as ``F.linear`` on every one (``ACCURACY_MARGIN``): the dtype's ``default_kernel`` unless another
    beats it by ``MARGIN`` on their total time. The kernels take turns, round after round, and each keeps its
    best time, so that a slow moment hits all alike."""
    dtype = products[0][0].dtype
    exact = [with_gelu(F.linear(x.double(), weight.double(), None if bias is None else bias.double()), gelu)
             for x, weight, bias, gelu in products]
    errors = {}
    with torch.autocast("cpu", enabled=False), warnings.catch_warnings():  # each kernel at the inputs' own dtype
        warnings.simplefilter("ignore", KernelFallback)  # a candidate that fails here is left out, not run
        for name in candidates(dtype):  # (also the warm-up: first-call allocations, a weight's blocks)
            errors[name] = [error(LINEARS[name](*product), y) for product, y in zip(products, exact, strict=True)]
    names = [name for name in candidates(dtype)
             if all(e <= ACCURACY_MARGIN * blas for e, blas in zip(errors[name], errors["blas"], strict=True))]
    best = dict.fromkeys(names, float("inf"))
    with torch.autocast("cpu", enabled=False):
        for _ in range(rounds):
            for name in names:
                best[name] = min(best[name], sum(seconds(LINEARS[name], product) for product in products))
    default = default_kernel(dtype, names)
    fastest = min(best, key=best.get)
    return fastest if best[fastest] * MARGIN < best[default] else default


def forced_kernel(dtype: torch.dtype) -> str | None:
    """The kernel ``MINIBERT_CPU_LINEAR`` names for this dtype, if it is set: a name, or several separated
    by commas, of which each dtype takes the first it can run ("upcast,blas": bf16 computed in float32,
    and float32 by F.linear)."""
    value = os.environ.get("MINIBERT_CPU_LINEAR")
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    for name in names:
        if name not in LINEARS:
            raise ValueError(f"MINIBERT_CPU_LINEAR={value!r}: {name!r} is not a kernel (kernels: {list(LINEARS)})")
    for name in names:
        if name in candidates(dtype):
            return name
    raise ValueError(f"MINIBERT_CPU_LINEAR={value!r} names no kernel for {dtype}: it must name one of "
                     f"{candidates(dtype)}")


def linear_kernel(dtype: torch.dtype) -> str:
    """The kernel CPU linears of this dtype run: ``MINIBERT_CPU_LINEAR``'s when set, else measured once on
    MiniLM's two feed-forward products, in and out, 256 rows each (the second, 1,536 wide, is where blocks
    cost most), as the layers run them (with a bias; the first with its GELU), drawn from a generator of their
    own, so that the global random state, which seeds dropout, is left as it was."""
    if dtype in CHOSEN:  # chosen already: every linear layer asks, so no lock on this path
        return CHOSEN[dtype]
    if dtype == torch.bfloat16:
        # upcast runs float32's kernel: choose that one first, or timing upcast would wait for a measurement
        # of float32 that waits for this one to end
        linear_kernel(torch.float32)
    with MEASURING:
        if dtype not in CHOSEN:
            chosen = forced_kernel(dtype)
            if chosen is None and len(candidates(dtype)) > 1:  # nothing forced, something to choose from
                generator = torch.Generator().manual_seed(0)
                shapes = ((256, 384), (1536, 384), (1536,)), ((256, 1536), (384, 1536), (384,))  # (x, weight, bias)
                with torch.inference_mode(False):  # weights whose packed forms are kept, as a model's are
                    chosen = measure([tuple(torch.randn(*shape, generator=generator).to(dtype) for shape in three)
                                      + (gelu,) for three, gelu in zip(shapes, ("none", None), strict=True)])
            CHOSEN[dtype] = chosen or "blas"
    return CHOSEN[dtype]


def cpu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None,
               keep: bool = True, residual: torch.Tensor | None = None):
    """A CPU linear layer (float32 or bfloat16, 2-D input) by the kernel chosen for its dtype, plus ``residual``
    if given (residual + y, a post-LN block's sum: inside oneDNN's product in inference, ``onednn_linear``).
    Autograd goes through ``F.linear`` and the dtype casts natively, and through ``KernelLinear`` for oneDNN and
    the blocked kernel (``keep``: the weight's packed form or blocks are worth keeping)."""
    if torch.compiler.is_compiling():  # inductor runs its own linear (it takes oneDNN's op on frozen weights only)
        return added(residual, blas_linear(x, weight, bias, gelu))
    kernel = linear_kernel(x.dtype)
    if kernel in ("onednn", "blocked"):
        tensors = (x, weight, bias, residual)
        if forward_ad_open() and any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors):
            # forward-mode AD: F.linear has its formula, these kernels none
            return added(residual, blas_linear(x, weight, bias, gelu))
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return added(residual, with_gelu(KernelLinear.apply(x, weight, bias, LINEARS[kernel]), gelu))
        if kernel == "onednn":  # inference, or a frozen layer: the packed form kept
            return LINEARS[kernel](x, weight, bias, gelu, keep, residual=residual)
        return added(residual, LINEARS[kernel](x, weight, bias, gelu, keep))
    if kernel == "upcast":
        return added(residual, upcast_linear(x, weight, bias, gelu, keep))
    return added(residual, LINEARS[kernel](x, weight, bias, gelu))


def forward_ad_open() -> bool:
    """Whether a forward-mode AD level is open: only inside one can a tensor carry a tangent. (A private global
    of ``torch.autograd.forward_ad``; where this torch lacks it, True, and every input is checked.)"""
    level = getattr(forward_ad, "_current_level", None)
    return not isinstance(level, int) or level >= 0


class KernelLinear(torch.autograd.Function):
    """A linear layer whose forward runs a kernel with no autograd formula (oneDNN's, the blocked one), on the
    weight as it is (it changes at every step), and whose backward is ``F.linear``'s, by BLAS: dx = dy @ W,
    dW = dy.T @ x, db = the sum of dy over the rows. (oneDNN's op would need a contiguous copy of each transposed
    matrix, and the blocked kernel's sums for dW would run over every row of the batch.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: Callable):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return kernel(x, weight, bias, keep=False)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        dx = grad @ weight if ctx.needs_input_grad[0] else None
        dw = grad.t() @ x if ctx.needs_input_grad[1] else None
        db = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None

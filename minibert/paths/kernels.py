"""The CPU matrix products of the fast path: which kernel runs, chosen by measuring on the CPU
at hand, and the private torch ops behind one function each, with a public fallback. Its attention
is chosen the same way (at the end of this file).

Which kernel is fastest is a property of the CPU, not of the code, so nothing here assumes it:

- **float32**: the BLAS behind ``F.linear`` (MKL in the x86 wheels) or oneDNN's fused linear. Which one
  wins differs from one x86 CPU to another, AMD or Intel.
- **bfloat16**: native bf16 products where the CPU has bf16 instructions (AVX512-BF16, AMX). Where it has
  none they are emulated, far slower than float32 ones; there converting to float32 for the product and
  rounding the result back ("upcast") is the faster way to the same bf16 numbers, as OpenVINO does.

So the first CPU linear layer of each dtype times every candidate, once per process, on a fixed product
of MiniLM's feed-forward shape, and the fastest (the public ``F.linear`` unless another is clearly
faster) runs from then on. Speed is not bought with accuracy: a kernel whose error on that product (against
the same product in float64) is larger than ``F.linear``'s is not a candidate (oneDNN's float32 products on
some CPUs round about twice as far from the exact result as BLAS's, and in a deep model that shows). A
kernel that fails on this CPU (oneDNN in bf16 without bf16 instructions) is left out for that dtype alone.
The kernels agree to float rounding, not bit for bit, and two processes may measure differently:
to run the same one in every process (bit-identical outputs across the shards of one job, say), set
``MINIBERT_CPU_LINEAR`` (``blas`` or ``onednn``, even where oneDNN is the less accurate; for bf16 also
``upcast``; a list such as ``upcast,onednn`` gives each dtype the first it can run), and
``MINIBERT_CPU_ATTENTION`` the attention (below).
``CHOSEN`` holds the choices; setting an entry forces one, as the tests do. A training run saves its
choices (``kernel_choices``) and its resumed run, like every rank of a DDP job, runs those
(``use_kernel_choices``): different kernels round differently, and a resume must continue exactly.
(The int8 path's products are chosen by measuring too, in ``int8_kernels.py``, among kernels that are
all exact.)

**Attention** runs on the (B, L) grid either as the products written out (as ``model.py`` writes them)
or by SDPA's fused CPU kernel, whichever is faster here by ``MARGIN``, measured once per dtype
(``ATTENTION_CHOSEN``; ``MINIBERT_CPU_ATTENTION`` forces one). MPNet's bias and attention dropout always
take the products, as in the reference.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

GELU_ALGORITHMS = {"none": "none", "tanh": "tanh"}  # nn.GELU's `approximate` -> oneDNN's gelu algorithm
CHOSEN: dict[torch.dtype, str] = {}  # dtype -> the kernel its CPU linears run: "blas", "onednn" or "upcast"
ATTENTION_CHOSEN: dict[torch.dtype, str] = {}  # dtype -> how the fast path's CPU attention runs: "products" or "sdpa"
# (torch.int8: the int8 path's products, "int_mm", "float32" or "onednn", int8_kernels.py)
MARGIN = 1.25  # another kernel must beat F.linear by this much: timings on a busy machine jitter, and a tie
# should not be decided differently by two processes
ACCURACY_MARGIN = 1.1  # and its mean error against float64 may be at most this times F.linear's (the products
# are fixed, so this part of the choice is the same in every process on a CPU)
LINEAR_DTYPES = (torch.float32, torch.bfloat16)  # the dtypes whose CPU linears are chosen (cpu_linear)
ATTENTIONS = ("products", "sdpa")  # the ways the fast path's CPU attention can run
ONEDNN_FAILED: set[torch.dtype] = set()  # the dtypes oneDNN's op failed for in this process
MEASURING = threading.Lock()  # one measurement at a time: two at once would time each other


class KernelFallback(UserWarning):
    """A private op failed here; the public fallback runs from then on (same results, other speed)."""


def find_onednn_op():
    """oneDNN's fused linear (what torch.compile emits for CPU linears), a private op: None where this
    build lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


ONEDNN_OP = find_onednn_op()


def fall_back(what: str, error: Exception, instead: str = "the public torch functions") -> None:
    warnings.warn(f"{what} failed ({error}); the fast path falls back to {instead}", KernelFallback, stacklevel=3)


def with_gelu(y: torch.Tensor, gelu: str | None) -> torch.Tensor:
    return y if gelu is None else F.gelu(y, approximate=gelu)


def blas_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None):
    return with_gelu(F.linear(x, weight, bias), gelu)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None):
    """x @ weight.T + bias (then GELU, fused into the matmul, when ``gelu`` names one), by oneDNN.

    The only caller of the private op. Where it is missing, or fails where F.linear works (said once, and
    not tried again for that dtype in this process), F.linear computes the same; inputs that F.linear
    refuses too get F.linear's own error."""
    if ONEDNN_OP is not None and x.dtype not in ONEDNN_FAILED:
        try:
            if gelu is None:
                return ONEDNN_OP(x, weight, bias, "none", [], "")
            return ONEDNN_OP(x, weight, bias, "gelu", [], GELU_ALGORITHMS[gelu])
        except (RuntimeError, TypeError) as e:
            y = blas_linear(x, weight, bias, gelu)  # raises here if the inputs themselves are wrong
            fall_back(f"oneDNN's linear in {x.dtype}", e)
            ONEDNN_FAILED.add(x.dtype)
            return y
    return blas_linear(x, weight, bias, gelu)


def upcast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None):
    """A bfloat16 linear computed in float32 (by float32's kernel), rounded back to bfloat16: the same
    result as a bf16 kernel that accumulates in float32, which is what they all do. (Autocast would cast
    the float32 product back to bf16: it is off in here.)"""
    bias = None if bias is None else bias.float()
    with torch.autocast("cpu", enabled=False):
        return cpu_linear(x.float(), weight.float(), bias, gelu).to(x.dtype)


LINEARS: dict[str, Callable] = {"blas": blas_linear, "onednn": onednn_linear, "upcast": upcast_linear}


def candidates(dtype: torch.dtype) -> list[str]:
    """The kernels worth timing for a dtype, the public one first."""
    names = ["blas"] + (["onednn"] if ONEDNN_OP is not None and dtype not in ONEDNN_FAILED else [])
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


@torch.no_grad()
def measure(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rounds: int = 5) -> str:
    """The fastest kernel for this product among those as accurate as ``F.linear`` (``ACCURACY_MARGIN``):
    ``F.linear`` unless another beats it by ``MARGIN``. The kernels take turns, round after round, and each
    keeps its best time, so that a slow moment hits all alike."""
    exact = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    errors = {}
    with torch.autocast("cpu", enabled=False), warnings.catch_warnings():  # each kernel at the inputs' own dtype
        warnings.simplefilter("ignore", KernelFallback)  # a candidate that fails here is left out, not run
        for name in candidates(x.dtype):
            errors[name] = error(LINEARS[name](x, weight, bias), exact)  # also the warm-up: first-call allocations
    names = [name for name in candidates(x.dtype) if errors[name] <= ACCURACY_MARGIN * errors["blas"]]
    best = dict.fromkeys(names, float("inf"))
    with torch.autocast("cpu", enabled=False):
        for _ in range(rounds):
            for name in names:
                best[name] = min(best[name], seconds(LINEARS[name], (x, weight, bias)))
    fastest = min(best, key=best.get)
    return fastest if best[fastest] * MARGIN < best["blas"] else "blas"


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
    """The kernel CPU linears of this dtype run: ``MINIBERT_CPU_LINEAR``'s when set, else measured once on 256
    rows times a weight of MiniLM's feed-forward shape (drawn from a generator of their own, so that the
    global random state, which seeds dropout, is left as it was)."""
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
                x, weight = (torch.randn(*shape, generator=generator).to(dtype) for shape in ((256, 384), (1536, 384)))
                chosen = measure(x, weight, None)
            CHOSEN[dtype] = chosen or "blas"
    return CHOSEN[dtype]


def cpu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None):
    """A CPU linear layer (float32 or bfloat16, 2-D input) by the kernel chosen for its dtype. Autograd goes
    through ``F.linear`` and the dtype casts natively, and through ``OneDNNLinear`` for oneDNN."""
    kernel = linear_kernel(x.dtype)
    if kernel == "onednn" and torch.is_grad_enabled():
        return with_gelu(OneDNNLinear.apply(x, weight, bias), gelu)
    return LINEARS[kernel](x, weight, bias, gelu)


class OneDNNLinear(torch.autograd.Function):
    """A linear layer by oneDNN, with its backward also by oneDNN (the op has no autograd formula):
    dx = dy @ W, dW = dy.T @ x, db = sum of dy over the rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        dx = onednn_linear(grad, weight.t().contiguous(), None) if ctx.needs_input_grad[0] else None
        dw = onednn_linear(grad.t().contiguous(), x.t().contiguous(), None) if ctx.needs_input_grad[1] else None
        db = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def products_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
                       bias: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + bias, masked) v, written out as in ``model.py``: q, k, v (B, H, L, D); ``keep``
    (B, 1, 1, L) bool (True: a real key) or None; attention dropout ``dropout_p`` on the probabilities.
    In bf16 where bf16 linears are upcast (no bf16 instructions), computed in float32 and rounded back, for
    the same reason."""
    if q.dtype == torch.bfloat16 and CHOSEN.get(torch.bfloat16) == "upcast":
        with torch.autocast("cpu", enabled=False):
            y = products_attention(q.float(), k.float(), v.float(), keep, bias, dropout_p)
        return y.to(q.dtype)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, L, L)
    if bias is not None:
        scores = scores + bias
    if keep is not None:
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return F.dropout(F.softmax(scores, dim=-1), p=dropout_p, training=dropout_p > 0) @ v


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The same by PyTorch's fused kernel (``scaled_dot_product_attention``; no bias, no dropout here)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def attention_kernel(dtype: torch.dtype) -> str:
    """How the fast path's CPU attention runs in ``dtype``, measured once per process: "products" (written out)
    unless "sdpa" (the fused kernel) beats it by ``MARGIN`` on a batch of sentence-length inputs, 32 sentences
    of at most 32 tokens, a third of them padded, 12 heads of 32. Which wins is the CPU's doing: at these
    lengths the fused kernel's set-up can cost more than it saves, and products in bf16 on a CPU without bf16
    instructions are emulated. ``MINIBERT_CPU_ATTENTION`` (``products`` or ``sdpa``) forces one."""
    if dtype in ATTENTION_CHOSEN:  # chosen already: every attention layer asks, so no lock on this path
        return ATTENTION_CHOSEN[dtype]
    if dtype == torch.bfloat16:
        linear_kernel(dtype)  # the products run upcast where its linears do: choose that first
    with MEASURING:
        if dtype not in ATTENTION_CHOSEN:
            forced = os.environ.get("MINIBERT_CPU_ATTENTION")
            if forced is not None and forced not in ATTENTIONS:
                raise ValueError(f"MINIBERT_CPU_ATTENTION={forced!r}: it must be "
                                 + " or ".join(repr(kind) for kind in ATTENTIONS))
            ATTENTION_CHOSEN[dtype] = forced or measure_attention(dtype)
    return ATTENTION_CHOSEN[dtype]


@torch.no_grad()
def measure_attention(dtype: torch.dtype, rounds: int = 5) -> str:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(32, 12, 32, 32, generator=generator).to(dtype) for _ in range(3))
    keep = torch.ones(32, 1, 1, 32, dtype=torch.bool)
    keep[::3, ..., 20:] = False
    kernels = {"products": products_attention, "sdpa": sdpa_attention}
    best = dict.fromkeys(kernels, float("inf"))
    with torch.autocast("cpu", enabled=False):
        for _ in range(rounds):
            for name, kernel in kernels.items():
                best[name] = min(best[name], seconds(kernel, (q, k, v, keep)))
    return "sdpa" if best["sdpa"] * MARGIN < best["products"] else "products"


def kernel_choices(dtypes: Iterable[torch.dtype]) -> dict[str, str]:
    """The attention kernel this process runs in each dtype, and the linear one in float32 and bfloat16 (the
    dtypes ``cpu_linear`` serves), measured now where not chosen yet, as plain strings ({"linear:float32":
    "blas", "attention:float32": "products", ...}) that a checkpoint or a broadcast can carry."""
    choices = {}
    for dtype in sorted(set(dtypes), key=str):
        name = str(dtype).removeprefix("torch.")
        if dtype in LINEAR_DTYPES:
            choices[f"linear:{name}"] = linear_kernel(dtype)
        choices[f"attention:{name}"] = attention_kernel(dtype)
    return choices


def use_kernel_choices(choices: dict[str, str]) -> None:
    """Run the kernels ``kernel_choices`` gave in another process, whatever this one would measure (or
    ``MINIBERT_CPU_LINEAR``/``MINIBERT_CPU_ATTENTION`` would force). All are checked before any is taken: one
    this process cannot run (oneDNN's, in a torch build without it) is an error, since running another
    kernel instead would not continue that process's numbers."""
    pinned = []
    for key, kernel in choices.items():
        kind, _, name = key.partition(":")
        dtype = getattr(torch, name, None)
        if kind not in ("linear", "attention") or not isinstance(dtype, torch.dtype) or not dtype.is_floating_point \
                or (kind == "linear" and dtype not in LINEAR_DTYPES):
            linears = ", ".join(f"linear:{str(d).removeprefix('torch.')}" for d in LINEAR_DTYPES)
            raise ValueError(f"kernel choice {key!r}: not a kernel this version chooses ({linears}, "
                             "attention:<a float dtype>)")
        runnable = candidates(dtype) if kind == "linear" else list(ATTENTIONS)
        if kernel not in runnable:
            raise ValueError(f"kernel choice {key!r}: {kernel!r} is not one this process can run (it can run "
                             f"{runnable}; oneDNN's needs a torch build with it)")
        pinned.append((CHOSEN if kind == "linear" else ATTENTION_CHOSEN, dtype, kernel))
    for table, dtype, kernel in pinned:
        table[dtype] = kernel

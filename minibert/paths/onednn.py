"""The CPU linear kernels on oneDNN, and ``F.linear``'s (``blas_linear``), their public fallback: ``onednn_linear``
(a packed weight, with the bias, a GELU or a residual sum inside the product) and ``blocked_linear`` (float32
products summed in blocks, as a BLAS sums them). Which kernel runs is chosen in ``kernels.py``. oneDNN's ops are
private, those ``torch.compile`` emits for the CPU, found by ``find_op`` (None where this build lacks them), each
behind one function here; a failure is said once (``KernelFallback``) and the fallback runs from then on, for
that dtype, in this process.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from minibert.paths.weight_forms import kept

GELU_ALGORITHMS = {"none": "none", "tanh": "tanh"}  # nn.GELU's `approximate` -> oneDNN's gelu algorithm
ONEDNN_FAILED: set[torch.dtype] = set()  # the dtypes oneDNN's op failed for in this process
ADD_FAILED: set[torch.dtype] = set()  # the dtypes its add inside the product failed for (the plain op still runs)
PACK_FAILED: set[torch.dtype] = set()  # the dtypes oneDNN's weight packing failed for in this process
BLOCK = 192  # the most input channels in one partial sum of the "blocked" kernel


class KernelFallback(UserWarning):
    """A private op failed here; the public fallback runs from then on (same results, other speed)."""


def find_op(namespace: str, name: str):
    """A private oneDNN op of this torch build (what torch.compile emits for the CPU), or None where it lacks it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return None


ONEDNN_OP = find_op("mkldnn", "_linear_pointwise")  # oneDNN's fused linear
# the same with a tensor added inside the product (a binary post-op): None where this build lacks it
ONEDNN_ADD_OP = getattr(ONEDNN_OP, "binary", None) if ONEDNN_OP is not None else None
PACK_OP = find_op("mkldnn", "_reorder_linear_weight")  # a linear weight in oneDNN's layout (torch.compile's freezing)


def fall_back(what: str, error: Exception, instead: str = "the public torch functions") -> None:
    warnings.warn(f"{what} failed ({error}); the fast path falls back to {instead}", KernelFallback, stacklevel=3)


def with_gelu(y: torch.Tensor, gelu: str | None) -> torch.Tensor:
    return y if gelu is None else F.gelu(y, approximate=gelu)


def blas_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None):
    return with_gelu(F.linear(x, weight, bias), gelu)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None,
                  keep: bool = True, residual: torch.Tensor | None = None):
    """x @ weight.T + bias (then GELU, fused into the matmul, when ``gelu`` names one), by oneDNN; plus
    ``residual`` if given: added inside the product (rounded once, and no pass over the output of its own) where
    it has the output's shape and dtype, no GELU comes between and this build has the op for it, else after.
    Where that op fails (said once; not tried again for the dtype), the product runs, then the add.

    The only caller of the private op. ``keep``: the weight's packed form (``pack``; the same numbers,
    faster) is made once and kept for the next call, where the weight allows it; a weight that comes packed
    (the blocked kernel's blocks) runs as it is. Where the op is missing, or fails where F.linear works (said
    once, and not tried again for that dtype in this process), F.linear computes the same; inputs that F.linear
    refuses too get F.linear's own error."""
    if ONEDNN_OP is not None and x.dtype not in ONEDNN_FAILED:
        if not weight.is_mkldnn:  # (a packed weight runs as it is)
            form = kept(weight, ("packed",), lambda: pack(weight)) if keep else None
            # a strided weight or bias is read wrong, or slowly: give the op contiguous ones (a no-op for most)
            weight = form if form is not None else weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        if residual is not None and gelu is None and ONEDNN_ADD_OP is not None and x.dtype not in ADD_FAILED \
                and residual.dtype == x.dtype and residual.shape == (x.shape[0], weight.shape[0]):
            try:
                return ONEDNN_ADD_OP(x, residual.contiguous(), weight, bias, "add")
            except (RuntimeError, TypeError) as e:
                fall_back(f"oneDNN's linear with an add inside in {x.dtype}", e, "the linear, then the add")
                ADD_FAILED.add(x.dtype)
        try:
            if gelu is None:
                return added(residual, ONEDNN_OP(x, weight, bias, "none", [], ""))
            return added(residual, ONEDNN_OP(x, weight, bias, "gelu", [], GELU_ALGORITHMS[gelu]))
        except (RuntimeError, TypeError) as e:
            y = added(residual, blas_linear(x, plain(weight), bias, gelu))  # raises here if the inputs are wrong
            fall_back(f"oneDNN's linear in {x.dtype}", e)
            ONEDNN_FAILED.add(x.dtype)
            return y
    return added(residual, blas_linear(x, plain(weight), bias, gelu))


def added(residual: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """residual + y, as a post-LN block adds its sublayer's output to its input (y when there is none)."""
    return y if residual is None else residual + y


def pack(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (out, in) in oneDNN's own layout for its linear op (the same numbers as the plain weight,
    faster), or None where packing is missing or fails for its dtype (bf16 without AVX-512; said once, and the
    plain weight runs)."""
    if PACK_OP is None or weight.dtype in PACK_FAILED:
        return None
    try:
        return PACK_OP(weight.contiguous(), None)
    except RuntimeError as e:
        fall_back(f"oneDNN's weight packing in {weight.dtype}", e, "plain weights")
        PACK_FAILED.add(weight.dtype)
        return None


def plain(weight: torch.Tensor) -> torch.Tensor:
    """A weight as a plain tensor again, packed or not (for the public fallbacks)."""
    return weight.to_dense() if weight.is_mkldnn else weight


def blocked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: str | None = None,
                   keep: bool = True):
    """x @ weight.T + bias by oneDNN's products, summed the way a BLAS sums them: over blocks of at most
    ``BLOCK`` input channels, of equal widths, each block's product added to the running result in float32.
    A long float32 sum rounds further from the exact one than short sums added up, which is where oneDNN's
    own kernel and BLAS kernels differ (``experiments/kernel_accuracy/``). For float32. ``keep``: the weight's
    blocks, packed, are made once and kept for the next call (``weight_blocks``)."""
    if x.shape[1] <= BLOCK:
        return onednn_linear(x, weight, bias, gelu, keep)
    count = -(-x.shape[1] // BLOCK)
    edges = [i * x.shape[1] // count for i in range(count + 1)]
    blocks = weight_blocks(weight, edges, keep)
    y = onednn_linear(x[:, :edges[1]], blocks[0], bias, keep=False)
    for start, end, block in zip(edges[1:-1], edges[2:], blocks[1:], strict=True):
        y += onednn_linear(x[:, start:end], block, None, keep=False)
    return with_gelu(y, gelu)


def weight_blocks(weight: torch.Tensor, edges: list[int], keep: bool = True) -> list[torch.Tensor]:
    """The weight's columns cut at ``edges``, each block contiguous (oneDNN's fast kernels need that): made
    once, each packed, and kept while the weight stays as it was (``weight_forms.kept``), or cut anew at every
    call where ``keep`` is off or the weight cannot be kept."""
    def cut() -> list[torch.Tensor]:
        with torch.no_grad():
            return [weight[:, start:end].clone(memory_format=torch.contiguous_format)  # (never a view of it)
                    for start, end in zip(edges[:-1], edges[1:], strict=True)]

    def cut_and_pack() -> list[torch.Tensor]:
        return [block if (form := pack(block)) is None else form for block in cut()]

    blocks = kept(weight, ("blocks", tuple(edges)), cut_and_pack) if keep else None
    return cut() if blocks is None else blocks

"""The int8 path's products, q_x @ q_W for int8 matrices, exact: by oneDNN's quantized linear on the CPU's int8
units (VNNI, AMX-INT8) where it measures exact and clearly faster, else ``torch._int_mm``, else float64.

Both fast kernels are private torch ops, each behind one function with a public fallback, and chosen by
measuring once per process, as ``kernels.py`` chooses the float kernels.
"""

from __future__ import annotations

import torch

from minibert.paths import kernels
from minibert.paths.kernels import MARGIN, MEASURING, fall_back

INT_MM = getattr(torch, "_int_mm", None)  # int8 x int8 -> int32 products, a private function


def find_qlinear_ops():
    """oneDNN's quantized linear and its weight packing (what torch.compile's x86 int8 quantization emits),
    private ops that run on the CPU's int8 units (VNNI, AMX-INT8): None where this build lacks them."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.onednn.qlinear_prepack, torch.ops.onednn.qlinear_pointwise
    except (AttributeError, RuntimeError):
        return None


QLINEAR_OPS = find_qlinear_ops()


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for int8 matrices, exactly, in int32: by ``torch._int_mm`` where it exists and works, else (said
    once) in float64, which holds every such sum exactly (127 * 127 * K < 2^53)."""
    global INT_MM
    if INT_MM is not None:
        try:
            return INT_MM(a, b)
        except RuntimeError as e:
            y = exact_int8_matmul(a, b)  # raises here if the inputs themselves are wrong
            fall_back("torch._int_mm", e)
            INT_MM = None
            return y
    return exact_int8_matmul(a, b)


def exact_int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() @ b.double()).to(torch.int32)


def pack_int8_weight(weight_t: torch.Tensor) -> tuple | None:
    """An int8 weight (in, out) packed for oneDNN's quantized linear when that is the int8 kernel chosen
    here (``int8_kernel``), else None. The packing is oneDNN's own layout, made once per layer."""
    return onednn_pack(weight_t) if int8_kernel() == "onednn" else None


def onednn_pack(weight_t: torch.Tensor) -> tuple:
    out = weight_t.shape[1]
    packed = QLINEAR_OPS[0](weight_t.t().contiguous(), None)
    return packed, torch.ones(out), torch.zeros(out, dtype=torch.long)  # the op's per-row scales and zero points


def onednn_int8_product(q: torch.Tensor, packed: tuple) -> torch.Tensor:
    """q @ W in float32, by oneDNN. oneDNN's int8 products take unsigned inputs (u8 x s8, the form VNNI and
    AMX multiply): q + 128, with the zero point 128 subtracted inside the product. For an int8 q, q + 128 as
    a uint8 is q's bit pattern with the top bit flipped."""
    weight, ones, zeros = packed
    unsigned = q.view(torch.uint8).bitwise_xor(128)
    return QLINEAR_OPS[1](unsigned, 1.0, 128, weight, ones, zeros, None, 1.0, 0, torch.float32, "none", [], "")


def int8_product(q: torch.Tensor, weight_t: torch.Tensor, packed: tuple | None = None) -> torch.Tensor:
    """q @ weight_t (int8 (T, in) times int8 (in, out)) as float32: by oneDNN's quantized linear when the
    layer has a ``packed`` weight, else by ``int8_matmul``. Where oneDNN fails (said once, and not tried
    again in this process) ``int8_matmul`` computes the same."""
    global QLINEAR_OPS
    if packed is not None and QLINEAR_OPS is not None:
        try:
            return onednn_int8_product(q, packed)
        except RuntimeError as e:
            y = int8_matmul(q, weight_t).float()  # raises here if the inputs themselves are wrong
            fall_back("oneDNN's int8 linear", e, "int8_matmul (torch._int_mm)")
            QLINEAR_OPS = None
            return y
    return int8_matmul(q, weight_t).float()


@torch.no_grad()
def measure_int8(rounds: int = 5) -> str:
    """"onednn" if oneDNN's quantized linear gives the exact product on a full-range int8 test product and beats
    ``int8_matmul`` by ``MARGIN``, else "int_mm". Exactness is not a given: CPUs without VNNI multiply u8 x s8
    pairs into 16-bit sums that saturate, so there oneDNN is wrong for inputs above 127 and is not used."""
    # K = 3072 (BERT-base's ffn_out) and rows at the extremes, where sums pass 2^24 and an int8 unit without
    # 32-bit accumulation, or a zero-point correction done in float, would round differently from _int_mm
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (256, 3072), dtype=torch.int8, generator=generator)
    weight_t = torch.randint(-127, 128, (3072, 384), dtype=torch.int8, generator=generator)
    q[0], q[1], weight_t[:, 0], weight_t[:, 1] = -128, 127, 127, -127
    exact = exact_int8_matmul(q, weight_t).float()
    try:
        packed = onednn_pack(weight_t)
        if not torch.equal(onednn_int8_product(q, packed), exact):
            return "int_mm"
    except RuntimeError:
        return "int_mm"
    # timed on MiniLM's feed-forward shape, as the float kernels are
    q, weight_t = q[:, :384].contiguous(), torch.randint(-127, 128, (384, 1536), dtype=torch.int8, generator=generator)
    packed = onednn_pack(weight_t)
    best = {"int_mm": float("inf"), "onednn": float("inf")}
    products = {"int_mm": lambda: int8_matmul(q, weight_t), "onednn": lambda: onednn_int8_product(q, packed)}
    for _ in range(rounds):
        for name, product in products.items():
            best[name] = min(best[name], kernels.seconds(product, ()))
    return "onednn" if best["onednn"] * MARGIN < best["int_mm"] else "int_mm"


def int8_kernel() -> str:
    """The kernel of the int8 path's products in this process, measured once (``measure_int8``):
    "onednn" (the CPU's int8 units) or "int_mm" (``int8_matmul``). ``CHOSEN[torch.int8]`` forces one."""
    with MEASURING:
        if torch.int8 not in kernels.CHOSEN:
            kernels.CHOSEN[torch.int8] = measure_int8() if QLINEAR_OPS is not None else "int_mm"
    return kernels.CHOSEN[torch.int8]

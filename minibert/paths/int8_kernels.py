"""The int8 path's products, q_x @ q_W for int8 matrices, exact, by one of three kernels, measured per process:

- ``onednn``: oneDNN's quantized linear, on the CPU's int8 units (VNNI, AMX-INT8);
- ``int_mm``: ``torch._int_mm`` (int8 x int8 -> int32). Without int8 units it can be slower than float32 by
  an order of magnitude;
- ``float32``: the same integers multiplied by float32's BLAS, which is exact as long as every partial sum is
  an integer below 2^24 in size: 1,024 products of at most 128 * 127 are. Longer rows are cut into pieces of
  1,024 channels whose exact results are added in int32. It holds a float32 copy of the weight beside the
  int8 one (five times int8's bytes), so it gives int8's accuracy at about float32's speed, not int8's memory.

Each gives the exact product, made float32 and multiplied once by the weight's scale per column (oneDNN does
that inside its kernel, the others in one more pass), so all three give the same numbers, bit for bit.
The first two are private torch ops, each behind one function with a public fallback. The kernel is chosen
by measuring once per process, as ``kernels.py`` chooses the float kernels: only kernels that give the exact
product on a full-range test take part.
"""

from __future__ import annotations

import torch

from minibert.paths import kernels
from minibert.paths.kernels import MARGIN, MEASURING
from minibert.paths.onednn import fall_back, find_op

INT_MM = getattr(torch, "_int_mm", None)  # int8 x int8 -> int32 products, a private function


# oneDNN's weight packing and quantized linear (what torch.compile's x86 int8 quantization emits), private ops
# that run on the CPU's int8 units (VNNI, AMX-INT8): None where this build lacks them
QLINEAR_OPS = (find_op("onednn", "qlinear_prepack"), find_op("onednn", "qlinear_pointwise"))
QLINEAR_OPS = QLINEAR_OPS if None not in QLINEAR_OPS else None


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


EXACT_CHANNELS = 1024  # float32 holds every integer up to 2^24 >= 1024 * 128 * 127: a sum of 1,024 products is exact


def float32_int8_product(q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """q @ weight as float32, exactly, for an int8 q and a float32 ``weight`` holding int8 values: by float32's
    BLAS, in pieces of ``EXACT_CHANNELS`` input channels, each exact, added in int32. (Autocast would turn
    the products into bf16 ones: it is off in here.)"""
    with torch.autocast("cpu", enabled=False):
        if q.shape[1] <= EXACT_CHANNELS:
            return q.float() @ weight
        total = torch.zeros(q.shape[0], weight.shape[1], dtype=torch.int32)
        for start in range(0, q.shape[1], EXACT_CHANNELS):
            end = start + EXACT_CHANNELS
            total += (q[:, start:end].float() @ weight[start:end]).to(torch.int32)
        return total.float()


def pack_int8_weight(weight_t: torch.Tensor) -> tuple | torch.Tensor | None:
    """An int8 weight (in, out) in the form the int8 kernel chosen here (``int8_kernel``) takes, made once per
    layer: oneDNN's own packed layout, float32, or None (``torch._int_mm`` takes it as it is)."""
    kernel = int8_kernel()
    if kernel == "onednn" and QLINEAR_OPS is not None:  # (None once oneDNN failed in this process: int_mm runs)
        return onednn_pack(weight_t)
    return weight_t.float() if kernel == "float32" else None


def onednn_pack(weight_t: torch.Tensor) -> tuple:
    out = weight_t.shape[1]
    packed = QLINEAR_OPS[0](weight_t.t().contiguous(), None)
    return packed, torch.ones(out), torch.zeros(out, dtype=torch.long)  # the op's per-row scales and zero points


def onednn_int8_product(q: torch.Tensor, packed: tuple, column_scale: torch.Tensor | None = None) -> torch.Tensor:
    """q @ W in float32, by oneDNN, each column times ``column_scale`` inside the kernel when given. oneDNN's
    int8 products take unsigned inputs (u8 x s8, the form VNNI and AMX multiply): q + 128, with the zero point
    128 subtracted inside the product. For an int8 q, q + 128 as a uint8 is q's bit pattern with the top bit
    flipped."""
    weight, ones, zeros = packed
    unsigned = q.view(torch.uint8).bitwise_xor(128)
    scale = ones if column_scale is None else column_scale
    return QLINEAR_OPS[1](unsigned, 1.0, 128, weight, scale, zeros, None, 1.0, 0, torch.float32, "none", [], "")


def int8_product(q: torch.Tensor, weight_t: torch.Tensor, packed: tuple | torch.Tensor | None = None,
                 column_scale: torch.Tensor | None = None) -> torch.Tensor:
    """q @ weight_t (int8 (T, in) times int8 (in, out)) as float32, each column times ``column_scale`` (out,)
    when given, by the kernel ``packed`` was made for (``pack_int8_weight``): oneDNN's quantized linear for
    its packed layout (which scales inside the kernel), float32's BLAS for a float32 weight, else
    ``int8_matmul``. Every kernel gives the same numbers: the exact integer product, made float32 and
    multiplied by the scale once. Where oneDNN fails (said once, and not tried again in this process)
    ``int8_matmul`` computes the same."""
    global QLINEAR_OPS
    if isinstance(packed, torch.Tensor):
        return scaled(float32_int8_product(q, packed), column_scale)
    if packed is not None and QLINEAR_OPS is not None:
        try:
            return onednn_int8_product(q, packed, column_scale)
        except RuntimeError as e:
            y = scaled(int8_matmul(q, weight_t), column_scale)  # raises here if the inputs themselves are wrong
            fall_back("oneDNN's int8 linear", e, "int8_matmul (torch._int_mm)")
            QLINEAR_OPS = None
            return y
    return scaled(int8_matmul(q, weight_t), column_scale)


def scaled(product: torch.Tensor, column_scale: torch.Tensor | None) -> torch.Tensor:
    """An exact product (int32, or float32 holding integers) as float32, times ``column_scale`` if given: the
    integer rounded to float32 once, then one multiply, as oneDNN's kernel does it."""
    if column_scale is None:
        return product.float()
    return product.mul_(column_scale) if product.is_floating_point() else product.mul(column_scale)


@torch.no_grad()
def exact_kernels() -> dict[str, object]:
    """The kernels that give the exact scaled product on this CPU, each with how it packs a weight: int_mm
    always; float32 and oneDNN when a full-range test product comes out right."""
    # K = 3072 (BERT-base's ffn_out) and rows at the extremes, where sums pass 2^24 and an int8 unit without
    # 32-bit accumulation would round differently from _int_mm
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (256, 3072), dtype=torch.int8, generator=generator)
    weight_t = torch.randint(-127, 128, (3072, 384), dtype=torch.int8, generator=generator)
    q[0], q[1], weight_t[:, 0], weight_t[:, 1] = -128, 127, 127, -127
    # odd products whose running sum passes 2^24 and comes back: a float32 sum would round on the way
    weight_t[:1536, 2] = torch.randint(100, 128, (1536,), dtype=torch.int8, generator=generator)
    weight_t[1536:, 2] = -torch.randint(100, 128, (1536,), dtype=torch.int8, generator=generator)
    # and a sum near 4e7 that float32 cannot hold (its spacing there is 4): the result is the integer rounded
    # to float32 once, then scaled, whichever kernel multiplies and wherever it scales
    q[2], weight_t[:, 3] = (torch.randint(100, 128, (3072,), dtype=torch.int8, generator=generator) for _ in "qw")
    column_scale = torch.rand(384, generator=generator) / 100
    exact = exact_int8_matmul(q, weight_t).float() * column_scale
    packers = {"int_mm": lambda b: None}  # the kernels that take part, and how each packs a weight
    for name, pack, product in (("float32", torch.Tensor.float, lambda q, w, s: scaled(float32_int8_product(q, w), s)),
                                ("onednn", onednn_pack, onednn_int8_product)):
        if name == "onednn" and QLINEAR_OPS is None:
            continue
        try:
            if torch.equal(product(q, pack(weight_t), column_scale), exact):
                packers[name] = pack
        except RuntimeError:
            continue
    return packers


@torch.no_grad()
def measure_int8(rounds: int = 5) -> str:
    """The int8 kernel for this CPU, among those that give the exact scaled product on a full-range test:
    oneDNN's where it is exact, else ``int_mm``, unless another is faster by ``MARGIN``. oneDNN's kernel is
    made for the int8 units and scales inside itself, which whole encodes reward beyond what the bare
    products timed here show (``experiments/int8/``). Exactness is not a
    given: CPUs without VNNI multiply u8 x s8 pairs into 16-bit sums that saturate, so there oneDNN is wrong
    for inputs above 127 and is not used. (The kernels that take part agree bit for bit: two processes that
    choose differently differ in speed only.)"""
    packers = exact_kernels()
    generator = torch.Generator().manual_seed(1)
    q = torch.randint(-128, 128, (256, 1536), dtype=torch.int8, generator=generator)
    # timed on MiniLM's feed-forward products, in and out, as the float kernels are, and as the layers call
    # them: with the weight's scale per column. The shapes repeat, as a long encode's do: past the first round,
    # what a kernel spends preparing for a shape it has not seen is not counted
    timed = [(q[:, :384].contiguous(), torch.randint(-127, 128, (384, 1536), dtype=torch.int8, generator=generator)),
             (q[:, :1536].contiguous(), torch.randint(-127, 128, (1536, 384), dtype=torch.int8, generator=generator))]
    column_scales = [torch.rand(b.shape[1], generator=generator) for _, b in timed]
    products = {}
    for name, pack in packers.items():
        packed = [(a, b, pack(b), scale) for (a, b), scale in zip(timed, column_scales, strict=True)]
        products[name] = lambda packed=packed: [int8_product(*args) for args in packed]
    best = dict.fromkeys(products, float("inf"))
    for _ in range(rounds):
        for name, product in products.items():
            best[name] = min(best[name], kernels.seconds(product, ()))
    if QLINEAR_OPS is None:  # oneDNN failed while being timed (int8_product said so): int_mm was timed in its place
        best.pop("onednn", None)
    default = "onednn" if "onednn" in best else "int_mm"
    fastest = min(best, key=best.get)
    return fastest if best[fastest] * MARGIN < best[default] else default


def int8_kernel() -> str:
    """The kernel of the int8 path's products in this process, measured once (``measure_int8``): "onednn"
    (the CPU's int8 units), "float32" (float32's BLAS) or "int_mm" (``int8_matmul``). ``CHOSEN[torch.int8]``
    forces one."""
    with MEASURING:
        if torch.int8 not in kernels.CHOSEN:
            kernels.CHOSEN[torch.int8] = measure_int8()
    return kernels.CHOSEN[torch.int8]

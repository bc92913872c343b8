"""Forms of a weight that the fast path's CPU kernels run, made once in inference and kept.

A kernel may want a weight in another form than the parameter's: oneDNN in its own packed layout, which spares
it reordering the weight at every call, the blocked kernel in blocks of input channels, each packed, bf16's
"upcast" kernel a float32 copy (``onednn.py`` and ``kernels.py`` make them). Making a form costs a pass over
the weight, so in inference it is made once and kept, keyed by the weight's storage. It is made again when the
weight changes in place (its version counter moves), gets a new ``.data`` (another storage) or layout, or any
torch optimizer steps (a fused step moves no version counter), and dropped with the weight's storage. A write
that goes round all of these (through ``.data``, NumPy or a raw storage) is not seen: ``KEPT.clear()`` after
one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

KEPT: dict[int, tuple] = {}  # id(a weight's storage) -> (the weight's state and the form's name, the form)
STEPS = [0]  # torch optimizer steps taken in this process, counted from the first form kept (STEP_HOOK)
STEP_HOOK: list = []  # the handle of the hook that counts them


def kept(weight: torch.Tensor, form: tuple, make: Callable[[], object]) -> object | None:
    """``make()``, the form of ``weight`` named ``form``, made once and kept while the weight stays as it was;
    None where the weight has no version counter (a tensor made in inference mode), so that a change to it
    could not be seen: the caller then runs without a kept form. (A form must never be the weight itself, or
    the entry would keep the storage it is dropped with alive.)"""
    version = weight_version(weight)
    if version is None:
        return None
    if not STEP_HOOK:
        STEP_HOOK.append(register_optimizer_step_post_hook(count_step))
    storage = weight.untyped_storage()  # (the same Python object as long as the storage lives)
    state = (STEPS[0], version, weight.data_ptr(), weight.dtype, weight.shape, weight.stride(), form)
    cached = KEPT.get(id(storage))
    if cached is not None and cached[0] == state:
        return cached[1]
    with torch.inference_mode(False), torch.no_grad():  # a plain tensor even inside inference mode (encode's): a
        made = make()  # form made there could not be saved for a later backward, nor keep forms of its own
    if cached is None:  # dropped when the storage is freed: no other can take its id or address before
        weakref.finalize(storage, KEPT.pop, id(storage), None)
    KEPT[id(storage)] = state, made
    return made


def count_step(*args) -> None:
    STEPS[0] += 1


def weight_version(tensor: torch.Tensor) -> int | None:
    """The tensor's version counter, which every in-place change moves (a private attribute), or None where
    it has none (tensors made in inference mode) or this torch lacks it: then nothing is kept."""
    try:
        return tensor._version
    except (AttributeError, RuntimeError):
        return None

"""The feed-forward nonlinearities a checkpoint's ``hidden_act`` (DistilBERT: ``activation``) can name.

The names are transformers' (its ``ACT2FN`` table) and each computes transformers' function for that name, so
a checkpoint trained with, say, ``quick_gelu`` runs the same function here. BERT's own is ``gelu``, the exact
erf form; ``gelu_new``, ``gelu_fast`` and their kin are the tanh approximation written in other ways, the same
function to float rounding. Two names are refused: ``prelu`` and ``xielu`` carry learnt parameters of their
own, which a checkpoint's encoder keys do not hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def laplace(x: torch.Tensor, mu: float = 0.707107, sigma: float = 0.282095) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf((x - mu).div(sigma * math.sqrt(2.0))))


# name -> the function (the tanh GELUs are one function written in several ways)
FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact: x * Phi(x), with erf
    "gelu_python": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_python_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_10": lambda x: torch.clip(F.gelu(x), -10.0, 10.0),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "relu2": lambda x: torch.square(F.relu(x)),
    "relu6": F.relu6,
    "leaky_relu": F.leaky_relu,  # slope 0.01
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardswish": F.hardswish,
    "laplace": laplace,
    "sqrtsoftplus": lambda x: F.softplus(x).sqrt(),
    "linear": lambda x: x,
}
WITH_PARAMETERS = ("prelu", "xielu")


class Activation(nn.Module):
    """One of FUNCTIONS as a module (it has no parameters), named in its repr."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.function = name, FUNCTIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def extra_repr(self) -> str:
        return self.name


def check_activation(name: str) -> None:
    if name in WITH_PARAMETERS:
        raise ValueError(f"hidden_act {name!r} has learnt parameters of its own, which minibert does not load")
    if name not in FUNCTIONS:
        raise ValueError(f"hidden_act {name!r} is not an activation transformers knows (known: {', '.join(FUNCTIONS)})")


# Names whose function is PyTorch's exact or tanh GELU to float rounding (the same formula, its terms in
# another order): they run as nn.GELU, which the fast path fuses into its matmul.
GELU_MODULES = {"gelu": "none", "gelu_python": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh",
                "gelu_python_tanh": "tanh", "gelu_accurate": "tanh", "gelu_fast": "tanh"}


def activation(name: str) -> nn.Module:
    """The module for ``name``: nn.GELU for the GELUs above, nn.ReLU for relu, else an ``Activation``."""
    check_activation(name)
    if name in GELU_MODULES:  # BERT's "gelu" is the exact one: x * Phi(x), with erf
        return nn.GELU(approximate=GELU_MODULES[name])
    if name == "relu":
        return nn.ReLU()
    return Activation(name)

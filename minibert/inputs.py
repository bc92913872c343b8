"""What the public calls take (``encode``, ``fill_mask``, search), read as the references read it, or refused by
name.

- **Texts**: one string (a 1-D result), or a batch: a list, a tuple, or a NumPy array of strings. Anything
  else is an error that names its type. sentence-transformers treats other objects as one input of another
  modality (a dict of ``{"text": ...}``, an image, a chat message): a text encoder runs none of those.
- **Counts** (``batch_size``, ``top_k``, ...): any integer type but bool, in their range.
- **The result's form**: ``convert_to`` ("numpy" or "torch"), or sentence-transformers' two flags:
  ``convert_to_tensor=True`` is a tensor, ``convert_to_numpy=False`` without it a list of tensors.
"""

from __future__ import annotations

import numbers

import numpy as np

OUTPUT_VALUES = ("sentence_embedding", "token_embeddings")  # what encode can give for each text


def texts(sentences, name: str = "sentences") -> tuple[list[str], bool]:
    """(the texts as a list, whether one string was given); ``name``: the argument's, for the errors."""
    if isinstance(sentences, str):
        return [sentences], True
    if isinstance(sentences, np.ndarray) and sentences.ndim == 1 and sentences.dtype.kind in "UO":
        sentences = sentences.tolist()
    if not isinstance(sentences, (list, tuple)):
        raise TypeError(f"{name} must be a str or a list of str, got {type(sentences).__name__}")
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{i}] is {type(s).__name__}, expected str")
    return list(sentences), False


def whole_number(name: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in low..high (any integer type but bool), or an error that names it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not low <= value <= (value if high is None else high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def task_prompt_name(task: str | None, prompt_name: str | None, prompt: str | None) -> str | None:
    """The prompt name ``encode_query`` / ``encode_document`` run with: the one given, none where a prompt is given,
    else the task's own ("query", "document"), not the folder's default prompt, as in sentence-transformers."""
    return prompt_name if prompt_name is not None or prompt is not None else task


def output_form(convert_to: str, convert_to_numpy: bool, convert_to_tensor: bool,
                output_value: str = "sentence_embedding", precision: str = "float32") -> str:
    """"numpy", "torch" or "list" (of tensors, one per text), as the arguments ask. Token embeddings come as a
    list (sentence-transformers ignores the other forms there; here asking for one is an error)."""
    if convert_to not in ("numpy", "torch"):
        raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
    if output_value not in OUTPUT_VALUES:
        raise ValueError(f"output_value must be one of {list(OUTPUT_VALUES)}, got {output_value!r} "
                         "(sentence-transformers' None, every feature of every text, is not given here)")
    form = "torch" if convert_to_tensor else convert_to if convert_to_numpy else "list"
    if output_value == "token_embeddings" and (precision != "float32" or form == "torch"):
        culprit = f"precision={precision!r}" if precision != "float32" else "convert_to_tensor or convert_to='torch'"
        raise ValueError(f"token embeddings come as a list of tensors, one per text: not with {culprit}")
    return form

"""The encoder families minibert loads, by config.json's ``model_type``: each a subclass of the BERT
reference (``minibert/model.py``) in a file of its own that says what differs.

    bert                  model.py: the reference
    distilbert            distilbert.py: no token types, no pooler, its own names; sinusoidal positions
    roberta, xlm-roberta  roberta.py: positions from padding_idx + 1, one token type
    mpnet                 mpnet.py: a relative position bias on the scores, RoBERTa's positions
"""

from __future__ import annotations

from pathlib import Path

import torch

from minibert.families.distilbert import DistilBertConfig, DistilBertModel
from minibert.families.mpnet import MPNetConfig, MPNetModel
from minibert.families.roberta import RobertaConfig, RobertaModel
from minibert.files import read_json
from minibert.model import AttnImplementation, BertModel

FAMILIES: dict[str, type[BertModel]] = {"bert": BertModel, "distilbert": DistilBertModel, "roberta": RobertaModel,
                                        "xlm-roberta": RobertaModel, "mpnet": MPNetModel}


def family_class(folder: str | Path) -> type[BertModel]:
    """The model class for a folder, read from its config.json's model_type (BERT when it names none)."""
    config_path = Path(folder) / "config.json"
    raw = read_json(config_path, "config file")
    model_type = raw.get("model_type", "bert") if isinstance(raw, dict) else "bert"
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ValueError(f"{config_path}: model_type={model_type!r} is not supported by minibert "
                         f"(supported: {list(FAMILIES)})")
    return FAMILIES[model_type]


def load_model(folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
               attn_implementation: AttnImplementation = "sdpa") -> BertModel:
    """A Hugging Face folder of any supported family, loaded strictly on the reference path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    return family_class(folder).from_pretrained(folder, dtype=dtype, device=device,
                                                attn_implementation=attn_implementation)


__all__ = ["FAMILIES", "DistilBertConfig", "DistilBertModel", "MPNetConfig", "MPNetModel", "RobertaConfig",
           "RobertaModel", "family_class", "load_model"]

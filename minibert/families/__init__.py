"""The encoder families minibert loads, by config.json's ``model_type``: each a subclass of the BERT
reference (``minibert/model.py``) in a file of its own that says what differs.

    bert                  model.py: the reference
    distilbert            distilbert.py: no token types, no pooler, its own names
    roberta, xlm-roberta  roberta.py: positions counted from padding_idx + 1, skipping padding
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
    """The model class for a folder, read from its config.json's model_type. A config.json without one is
    refused, as transformers refuses it: its weights could be any family's."""
    config_path = Path(folder) / "config.json"
    raw = read_json(config_path, "config file")
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path}: expected a JSON object of settings, got {type(raw).__name__}")
    if "model_type" not in raw:
        raise ValueError(f"{config_path} has no model_type, so nothing says which family its weights are "
                         f"(transformers refuses such a folder too); add one of {list(FAMILIES)}")
    model_type = raw["model_type"]
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise ValueError(f"{config_path}: model_type={model_type!r} is not supported by minibert "
                         f"(supported: {list(FAMILIES)})")
    return FAMILIES[model_type]


def load_model(folder: str | Path, dtype: torch.dtype | None = None, device: str | torch.device | None = None,
               attn_implementation: AttnImplementation = "sdpa", config_overrides: dict | None = None) -> BertModel:
    """A Hugging Face folder of any supported family, loaded strictly on the reference path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    return family_class(folder).from_pretrained(folder, dtype=dtype, device=device,
                                                attn_implementation=attn_implementation,
                                                config_overrides=config_overrides)


__all__ = ["FAMILIES", "DistilBertConfig", "DistilBertModel", "MPNetConfig", "MPNetModel", "RobertaConfig",
           "RobertaModel", "family_class", "load_model"]

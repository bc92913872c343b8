"""minibert: a from-scratch BERT/SBERT encoder with weight parity to the reference libraries."""

from minibert.config import BertConfig
from minibert.hub import DEFAULT_MODEL, download, resolve_model
from minibert.model import BertModel, BertOutput, EncoderBlock, SelfAttention
from minibert.pooling import Pooling, PoolingConfig
from minibert.sentence import SentenceEncoder
from minibert.similarity import cos_sim
from minibert.tokenizer import Batch, Tokenizer
from minibert.weights import load_safetensors

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL", "Batch", "BertConfig", "BertModel", "BertOutput", "EncoderBlock", "Pooling",
    "PoolingConfig", "SelfAttention", "SentenceEncoder", "Tokenizer", "cos_sim", "download",
    "load_safetensors", "resolve_model",
]

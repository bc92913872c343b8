"""Write tests/fixtures/all-MiniLM-L6-v2-reference.npz from the reference libraries.

The fixture holds, for the test sentences: token ids and attention mask (transformers' tokenizer),
last hidden states of the real (unpadded) tokens, flattened (transformers.BertModel, eager
attention, fp32) and sentence embeddings
(sentence_transformers.SentenceTransformer). tests/test_reference_fixture.py checks minibert against
it with nothing but minibert's own dependencies installed.

    HF_HUB_OFFLINE=1 python scripts/make_reference_fixture.py
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, BertModel

from minibert import DEFAULT_MODEL, resolve_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
SENTENCES = (FIXTURES / "sentences.txt").read_text(encoding="utf-8").splitlines()  # the tests' sentences
OUT = FIXTURES / f"{DEFAULT_MODEL}-reference.npz"

if __name__ == "__main__":
    folder = str(resolve_model(DEFAULT_MODEL))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    embeddings = SentenceTransformer(folder, device="cpu").encode(SENTENCES, batch_size=len(SENTENCES))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        sentences=np.array(SENTENCES),
        input_ids=batch["input_ids"].numpy().astype(np.int32),
        attention_mask=batch["attention_mask"].numpy().astype(np.int8),
        real_token_hidden_states=hidden[batch["attention_mask"].bool()].numpy().astype(np.float32),
        embeddings=embeddings.astype(np.float32),
    )
    shape = tuple(batch["input_ids"].shape)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB): {len(SENTENCES)} sentences, ids {shape}")

#!/usr/bin/env bash
# A task's own top layers (minibert/branch.py), screened on dev like adapters.sh (same budget, seeds and "alone"
# rows, reused from the same OUT): sentiment, topic and NER each get their own copy of the encoder's top block,
# on its own and with dev's pick so far (distillation + annealed sampling) in place of the adapters, the
# distillation pulling either what the heads read (through the branches) or the shared encoder's embedding.
set -euo pipefail
OUT=${OUT:-runs/studies-methods}
BRANCHES="tasks.sentiment.head.branch=1 tasks.topic.head.branch=1 tasks.ner.head.branch=1"
DISTIL="optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1"
ANNEAL="sampling.temperature=1 sampling.temperature_end=5"
# shellcheck disable=SC2086  # the settings are meant to split into words
exec python experiments/variants.py --out "$OUT" --study branches --seeds 1 2 --max-dev 500 --alone baseline \
    --set steps=400 batch_size=16 runtime.precision=fp32 \
    --variant baseline \
    --variant "branches + distillation + annealed sampling" $BRANCHES $DISTIL $ANNEAL \
    --variant "branches" $BRANCHES \
    --variant "branches + distillation at the encoder + annealed sampling" $BRANCHES $DISTIL $ANNEAL \
        optim.distill_at=encoder

#!/usr/bin/env bash
# Task-specific capacity, screened on dev like screen.sh (same budget, seeds and "alone" rows, which it
# reuses from the same OUT): an adapter of width 64 for each task that does not make the embedding
# (sentiment, topic, NER), with those tasks' pull on the shared encoder at full or a quarter strength,
# the quarter strength without adapters to tell capacity from shielding, and the adapters with the
# previous pick (distillation + annealed sampling). A later session added distillation at the encoder's own
# embedding (optim.distill_at = "encoder": the adapters left free), without and with an adapter for NLI.
set -euo pipefail
OUT=${OUT:-runs/studies-methods}
ADAPTERS="tasks.sentiment.head.adapter=64 tasks.topic.head.adapter=64 tasks.ner.head.adapter=64"
QUARTER="tasks.sentiment.encoder_grad=0.25 tasks.topic.encoder_grad=0.25 tasks.ner.encoder_grad=0.25"
DISTIL="optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1"
ANNEAL="sampling.temperature=1 sampling.temperature_end=5"
# shellcheck disable=SC2086  # the settings are meant to split into words
exec python experiments/variants.py --out "$OUT" --study adapters --seeds 1 2 --max-dev 500 --alone baseline \
    --set steps=400 batch_size=16 runtime.precision=fp32 \
    --variant baseline \
    --variant "adapters" $ADAPTERS \
    --variant "adapters, encoder gradient x0.25" $ADAPTERS $QUARTER \
    --variant "encoder gradient x0.25, no adapters" $QUARTER \
    --variant "adapters + distillation + annealed sampling" $ADAPTERS $DISTIL $ANNEAL \
    --variant "adapters + distillation at the encoder + annealed sampling" $ADAPTERS $DISTIL $ANNEAL \
        optim.distill_at=encoder \
    --variant "adapters with NLI + distillation at the encoder + annealed sampling" $ADAPTERS \
        tasks.nli.head.adapter=64 $DISTIL $ANNEAL optim.distill_at=encoder

#!/usr/bin/env bash
# The dev screening of the multi-task methods (README.md beside this file): each variant of
# scripts/configs/multitask.toml for two seeds, and each task alone at the baseline's steps.
set -euo pipefail
OUT=${OUT:-runs/studies-methods}
exec python experiments/variants.py --out "$OUT" --study screen --seeds 1 2 --max-dev 500 --alone baseline \
    --set steps=400 batch_size=16 runtime.precision=fp32 \
    --variant baseline \
    --variant "uncertainty weighting" optim.loss_balance=uncertainty \
    --variant "annealed sampling T 1-5" sampling.temperature=1 sampling.temperature_end=5 \
    --variant "two tasks a step" sampling.tasks_per_step=2 steps=200 \
    --variant "PCGrad" sampling.tasks_per_step=2 steps=200 optim.pcgrad=true \
    --variant "distillation" optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1 \
    --variant "distillation + annealed sampling" optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1 \
        sampling.temperature=1 sampling.temperature_end=5

#!/usr/bin/env bash
# The recipe chosen on dev (README.md beside this file), for three seeds, beside each task alone at the same
# steps, then scored on test once. Seeds 1 and 2 reuse the screening's runs (screen.sh); seed 3 trains.
set -euo pipefail
OUT=${OUT:-runs/studies-methods}
python experiments/variants.py --out "$OUT" --study final --seeds 1 2 3 --max-dev 500 --alone distillation \
    --set steps=400 batch_size=16 runtime.precision=fp32 \
    --variant "distillation" optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1
python experiments/multitask_methods/score_on_test.py --out "$OUT" --seeds 1 2 3 --variant distillation

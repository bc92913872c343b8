#!/usr/bin/env bash
# Branches, dev's pick once a third seed was screened: seeds 1-3 on dev beside the baseline and each task alone at
# the baseline's steps (seeds 1 and 2 are branches.sh's runs, reused; the third trains), then each seed's best/
# scored on test once, beside alone's (the runs scored for distillation's test row).
set -euo pipefail
OUT=${OUT:-runs/studies-methods}
python experiments/variants.py --out "$OUT" --study final_branches --seeds 1 2 3 --max-dev 500 --alone baseline \
    --set steps=400 batch_size=16 runtime.precision=fp32 \
    --variant baseline \
    --variant branches tasks.sentiment.head.branch=1 tasks.topic.head.branch=1 tasks.ner.head.branch=1
python experiments/multitask_methods/score_on_test.py --out "$OUT" --seeds 1 2 3 --variant branches

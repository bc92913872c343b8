#!/usr/bin/env bash
# The recipe dev chose once adapters were screened (adapters.sh), through final.sh, beside the previous pick on
# test. Annealing draws the same tasks as the previous pick, so "alone" is the same runs (same folder, reused).
set -euo pipefail
STUDY=final_adapters SCORE_ALSO="distillation + annealed sampling" exec bash experiments/multitask_methods/final.sh \
    "adapters + distillation + annealed sampling" \
    tasks.sentiment.head.adapter=64 tasks.topic.head.adapter=64 tasks.ner.head.adapter=64 \
    optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1 sampling.temperature=1 sampling.temperature_end=5

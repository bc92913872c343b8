#!/usr/bin/env bash
# Does the screening's ranking hold for longer runs? The baseline and the recipe chosen on dev at 1,000 steps
# of 32 (five times the screening's examples, a third of make train's), one seed, scored on dev as screen.sh,
# with each task alone at the steps it has in the chosen recipe. Later sessions added dev's next pick
# (adapters.sh, final_adapters.sh), which draws the same tasks, and branches on their own (branches.sh), which
# draw the baseline's.
set -euo pipefail
OUT=${OUT:-runs/studies-methods-longer}
exec python experiments/variants.py --out "$OUT" --study longer --seeds 1 --max-dev 500 \
    --alone "distillation + annealed sampling" \
    --set steps=1000 batch_size=32 runtime.precision=fp32 \
    --variant baseline \
    --variant "distillation + annealed sampling" optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1 \
        sampling.temperature=1 sampling.temperature_end=5 \
    --variant "adapters + distillation + annealed sampling" tasks.sentiment.head.adapter=64 \
        tasks.topic.head.adapter=64 tasks.ner.head.adapter=64 optim.distill_from=all-MiniLM-L6-v2 \
        optim.distill_weight=1 sampling.temperature=1 sampling.temperature_end=5 \
    --variant "branches" tasks.sentiment.head.branch=1 tasks.topic.head.branch=1 tasks.ner.head.branch=1

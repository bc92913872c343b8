#!/usr/bin/env bash
# The recipe dev chose once adapters were screened (adapters.sh): adapters + distillation + annealed sampling,
# for three seeds, beside each task alone at the same steps, then scored on test once. Annealing draws the
# same tasks as final.sh's recipe, so "alone" is final.sh's (same folder, reused). Seeds 1 and 2 are the
# screening's runs, linked; seed 3 trains.
set -euo pipefail
OUT=${OUT:-runs/studies-methods-final}
SCREEN=${SCREEN:-runs/studies-methods}
RECIPE="adapters + distillation + annealed sampling"
mkdir -p "$OUT"
for seed in 1 2; do
    run="$SCREEN/adapters-distillation-annealed-sampling-seed$seed"
    link="$OUT/${run##*/}"  # scoring writes test.json into the screening's folder through it
    if [ -d "$run" ] && [ ! -e "$link" ]; then ln -sfn "$(realpath "$run")" "$link"; fi
done
python experiments/variants.py --out "$OUT" --study final_adapters --seeds 1 2 3 --max-dev 500 --alone "$RECIPE" \
    --set steps=400 batch_size=16 runtime.precision=fp32 \
    --variant "$RECIPE" tasks.sentiment.head.adapter=64 tasks.topic.head.adapter=64 tasks.ner.head.adapter=64 \
        optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1 sampling.temperature=1 sampling.temperature_end=5
python experiments/multitask_methods/score_on_test.py --out "$OUT" --seeds 1 2 3 \
    --variant "$RECIPE" "distillation + annealed sampling"

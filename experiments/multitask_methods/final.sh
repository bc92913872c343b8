#!/usr/bin/env bash
# A recipe chosen on dev (README.md beside this file), for three seeds, beside each task alone at the same
# steps, then scored on test once. Seeds 1 and 2 are the screening's runs, linked when present; seed 3
# trains. Its own folder: "alone" at an annealed recipe's steps differs from the screening's "alone".
#   bash final.sh [NAME SETTING...]   default: distillation + annealed sampling (final_adapters.sh: the next pick)
# STUDY names the table (OUT/STUDY.md); SCORE_ALSO, another variant of OUT to put beside it on test.
set -euo pipefail
OUT=${OUT:-runs/studies-methods-final}
SCREEN=${SCREEN:-runs/studies-methods}
STUDY=${STUDY:-final}
if [ $# -eq 0 ]; then
    set -- "distillation + annealed sampling" optim.distill_from=all-MiniLM-L6-v2 optim.distill_weight=1 \
        sampling.temperature=1 sampling.temperature_end=5
fi
RECIPE=$1
shift
folder=$(sed -E 's/[^[:alnum:]_.=-]+/-/g; s/^-+|-+$//g' <<< "$RECIPE")  # as experiments/variants.py names it
mkdir -p "$OUT"
for seed in 1 2; do
    run="$SCREEN/$folder-seed$seed"
    link="$OUT/${run##*/}"  # scoring writes test.json into the screening's folder through it
    if [ -d "$run" ] && [ ! -e "$link" ]; then ln -sfn "$(realpath "$run")" "$link"; fi
done
python experiments/variants.py --out "$OUT" --study "$STUDY" --seeds 1 2 3 --max-dev 500 --alone "$RECIPE" \
    --set steps=400 batch_size=16 runtime.precision=fp32 --variant "$RECIPE" "$@"
python experiments/multitask_methods/score_on_test.py --out "$OUT" --seeds 1 2 3 \
    --variant "$RECIPE" ${SCORE_ALSO:+"$SCORE_ALSO"}

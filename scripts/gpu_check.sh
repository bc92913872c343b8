#!/usr/bin/env bash
# What a GPU must show, in one command (within 8 minutes on one H100):
#   the CUDA tests (fast, compiled and reference paths against the reference, mixed precision, SDPA);
#   encode speed against sentence-transformers in fp32, bf16 and fp16, the compiled path with CUDA graphs,
#   and model FLOP utilisation; training-step speed (MiniLM, and the BERT-base shape).
# Everything goes to the terminal and to $OUT (default runs/gpu-check). Put the figures and the device in
# docs/speed.md, and set minibert.paths.FAST_BY_DEFAULT from what the tests showed.
#
#     bash scripts/gpu_check.sh            # PY=.venv/bin/python, else python3
#
# On a lent GPU machine (the device tool), which has PyTorch, transformers and sentence-transformers but
# neither this repository's venv nor its weights and data: make the bundle here first
# (.venv/bin/python scripts/gpu_bundle.py), then run(command="bash scripts/gpu_check.sh",
# carry=["gpu-bundle"], timeout_s=540). Each step has a time limit, and all of them one deadline (BUDGET
# seconds, 480 by default), so that what ran comes back and a short second call still fits in the lease.
set -uo pipefail
if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
OUT=${OUT:-runs/gpu-check}
BUDGET=${BUDGET:-480}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1  # unbuffered: a step stopped at its limit keeps what it printed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # minibert from this checkout, installed or not
if [ ! -f weights/all-MiniLM-L6-v2/config.json ] && [ -d gpu-bundle ]; then
    # the model folder and data that scripts/gpu_bundle.py made to travel here, unless the user named others
    : "${MINIBERT_WEIGHTS:=$PWD/gpu-bundle/weights}" "${MINIBERT_DATA:=$PWD/gpu-bundle/data}"
    export MINIBERT_WEIGHTS MINIBERT_DATA
fi
mkdir -p "$OUT"
status=0
deadline=$((SECONDS + BUDGET))
step() {  # step NAME SECONDS COMMAND...: run it within SECONDS (and the deadline), keep its output, go on
    local name=$1 seconds=$2; shift 2
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 10 ]; then echo "== $name: skipped, the deadline has passed" | tee "$OUT/$name.txt"
        status=1; return; fi
    [ "$seconds" -le "$left" ] || seconds=$left
    echo "== $name (at most ${seconds} s): $*" | tee "$OUT/$name.txt"
    timeout -k 10 "$seconds" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ': out of time'))" \
        | tee -a "$OUT/$name.txt"; status=1; }
}
step device 30 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    lscpu | grep -E 'Model name|^Flags'; echo weights: \${MINIBERT_WEIGHTS:-weights/}; \
    $PY -c 'import torch, transformers, sentence_transformers as st; \
print(\"torch\", torch.__version__, torch.version.cuda, \"transformers\", transformers.__version__, \
\"sentence-transformers\", st.__version__)'"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device: nothing to check"; exit 1; }
$PY -c "from minibert import resolve_model; resolve_model('all-MiniLM-L6-v2')" \
    || { echo "no model folder: make gpu-bundle/ (scripts/gpu_bundle.py) and carry it"; exit 1; }
# the CUDA tests only: the compiled path's CPU tests run wherever the suite runs
step tests 150 "$PY" -m pytest -v -rs --durations=0 -p no:cacheprovider tests -k cuda
step encode 150 "$PY" scripts/bench_encode.py --device cuda --rounds 2
step train-minilm 75 "$PY" scripts/bench_train.py --device cuda --precision bf16
step train-bert-base 60 "$PY" scripts/bench_train.py --device cuda --precision bf16 --shape bert-base --batch-size 32
echo "outputs in $OUT; $([ $status -eq 0 ] && echo 'every step passed' || echo 'a step FAILED: see above')"
exit $status

#!/usr/bin/env bash
# What a GPU must show, in one command (within 10 minutes on one H100):
#   the CUDA tests (fast, compiled and reference paths against the reference, mixed precision, SDPA);
#   encode speed against sentence-transformers in fp32, bf16 and fp16, the compiled path with CUDA graphs,
#   and model FLOP utilisation; training-step speed (MiniLM, and the BERT-base shape).
# Everything goes to the terminal and to $OUT (default runs/gpu-check). Put the figures and the device in
# docs/speed.md, and set minibert.paths.FAST_BY_DEFAULT from what the tests showed.
#
#     bash scripts/gpu_check.sh            # PY=.venv/bin/python by default
set -uo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/gpu-check}
export HF_HUB_OFFLINE=1
mkdir -p "$OUT"
status=0
step() {  # step NAME COMMAND...: run it, keep its output, remember a failure and go on
    local name=$1; shift
    echo "== $name: $*" | tee "$OUT/$name.txt"
    "$@" 2>&1 | tee -a "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name FAILED (exit $rc)"; status=1; }
}
step device bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    lscpu | grep -E 'Model name|^Flags'; $PY -c 'import torch; print(torch.__version__, torch.version.cuda)'"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device: nothing to check"; exit 1; }
step tests "$PY" -m pytest -q -rs -p no:cacheprovider tests -k "cuda or compiled"
step encode "$PY" scripts/bench_encode.py --device cuda --rounds 3
step train-minilm "$PY" scripts/bench_train.py --device cuda --precision bf16
step train-bert-base "$PY" scripts/bench_train.py --device cuda --precision bf16 --shape bert-base --batch-size 32
echo "outputs in $OUT; $([ $status -eq 0 ] && echo 'every step passed' || echo 'a step FAILED: see above')"
exit $status

#!/usr/bin/env bash
# What a GPU must show, in one command (within 10 minutes on one H100):
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
# (python scripts/gpu_bundle.py), then run(command="bash scripts/gpu_check.sh", carry=["gpu-bundle"],
# timeout_s=600). Each step has a time limit of its own, so that what ran comes back whole.
set -uo pipefail
if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
OUT=${OUT:-runs/gpu-check}
export HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # minibert from this checkout, installed or not
if [ -d gpu-bundle ]; then  # the model folder and data that scripts/gpu_bundle.py made to travel here
    export MINIBERT_WEIGHTS="$PWD/gpu-bundle/weights" MINIBERT_DATA="$PWD/gpu-bundle/data"
fi
mkdir -p "$OUT"
status=0
step() {  # step NAME SECONDS COMMAND...: run it within SECONDS, keep its output, remember a failure and go on
    local name=$1 seconds=$2; shift 2
    echo "== $name (at most ${seconds} s): $*" | tee "$OUT/$name.txt"
    timeout "$seconds" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "== $name FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ': out of time'))" \
        | tee -a "$OUT/$name.txt"; status=1; }
}
step device 60 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    lscpu | grep -E 'Model name|^Flags'; echo weights: \${MINIBERT_WEIGHTS:-weights/}; \
    $PY -c 'import torch, transformers, sentence_transformers as st; \
print(\"torch\", torch.__version__, torch.version.cuda, \"transformers\", transformers.__version__, \
\"sentence-transformers\", st.__version__)'"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "no CUDA device: nothing to check"; exit 1; }
step tests 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests -k "cuda or compiled"
step encode 150 "$PY" scripts/bench_encode.py --device cuda --rounds 3
step train-minilm 80 "$PY" scripts/bench_train.py --device cuda --precision bf16
step train-bert-base 80 "$PY" scripts/bench_train.py --device cuda --precision bf16 --shape bert-base --batch-size 32
echo "outputs in $OUT; $([ $status -eq 0 ] && echo 'every step passed' || echo 'a step FAILED: see above')"
exit $status

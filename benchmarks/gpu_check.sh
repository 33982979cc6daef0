#!/usr/bin/env bash
# The GPU checks in one prepared run (at most GPU_CHECK_S seconds, default 480), then one summary table.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]          # on a machine with a CUDA GPU, from the repository root
#
# 1. cuda_tests     the CUDA-only tests in one process (pytest -k "cuda or gpu"; they skip on a CPU machine)
# 2. loop_speed     alexnet at 224 px, bf16: the training loop against its bare loop (benchmarks/train_speed.py)
# 3. default_study  `dvc repro` of the default params in a fresh copy, per-stage times (benchmarks/scale.py)
# 4. tenth_scale    one tenth of the report's size, alexnet at 224 px, every strategy in `study`, one seed
# While it runs, nvidia-smi samples GPU utilisation and memory every second (OUTDIR/gpu_util.csv).
# Each step gets a share of what is left and is stopped at it; what it measured so far is kept.
# Packages the machine lacks (dvc, dvclive, cleanlab) install from .whl/*.whl when that folder exists.
# OUTDIR/gpu_check.json and the printed table are what docs/training.md's GPU section is generated from.
set -uo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: bash benchmarks/gpu_check.sh [OUTDIR]"; exit 0
fi
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
BUDGET=${GPU_CHECK_S:-480}
mkdir -p "$OUT"
START=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
export PYTHONUNBUFFERED=1 WELDNET_PROGRESS=lines
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible; nothing measured"
    python3 benchmarks/gpu_summary.py "$OUT"
    exit 0
fi
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 \
    > "$OUT/gpu_util.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT
: > "$OUT/steps.tsv"
step() {   # step NAME SHARE_OF_WHAT_IS_LEFT(percent) COMMAND...
    local name=$1 share=$2; shift 2
    local limit=$(( $(left) * share / 100 ))
    if (( limit < 20 )); then echo -e "$name\tskipped\t0\t$(date +%s)\t$(date +%s)" >> "$OUT/steps.tsv"; return; fi
    local t0=$(date +%s)
    echo "== $name (at most ${limit} s)"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo -e "$name\t$rc\t$(( $(date +%s) - t0 ))\t$t0\t$(date +%s)" >> "$OUT/steps.tsv"
    tail -n 15 "$OUT/$name.log"
}
step cuda_tests 15 python3 -m pytest -q -rs -p no:cacheprovider -o addopts= -k "cuda or gpu" tests
step loop_speed 25 python3 benchmarks/train_speed.py --only training --device cuda --arch alexnet --input-size 224 \
    --train-default 20000 --val 2000 --epochs 2 --repeats 1 --json "$OUT/loop_speed.json"
step default_study 60 python3 benchmarks/scale.py --work /tmp/gpu_check_default --only-reference --study default
cp /tmp/gpu_check_default/scale.json "$OUT/default_study.json" 2>/dev/null
step tenth_scale 100 python3 benchmarks/scale.py --work /tmp/gpu_check_tenth --scale 0.1 --skip-reference \
    --study default --set model.arch=alexnet --set model.input_size=224 --set "train.seeds=[0]"
cp /tmp/gpu_check_tenth/scale.json "$OUT/tenth_scale.json" 2>/dev/null
kill $SMI 2>/dev/null
python3 benchmarks/gpu_summary.py "$OUT"

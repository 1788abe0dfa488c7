#!/bin/sh
# The GPU figures of benchmarks/RESULTS.md in one run, each benchmark's output in OUT_DIR/<n>-<name>.txt:
# training MFU of unify_base and ofa_base (bf16 autocast, the largest power-of-two batch that fits; where
# the device time goes; with the backbone's BatchNorm frozen; unify_base with compiled layers),
# beam-search generation at batch 1 and 32, and the image pipeline.
#   sh benchmarks/gpu.sh OUT_DIR
# PYTHON chooses the interpreter (default .venv's, else python3), ARCHS the models (default unify_base,ofa_base).
set -eu
cd "$(dirname "$0")/.."
out=${1:?usage: sh benchmarks/gpu.sh OUT_DIR}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
world=$(mktemp -d)
trap 'rm -rf "$world"' EXIT
mkdir -p "$out"
archs=${ARCHS:-unify_base,ofa_base}
export PYTHONUNBUFFERED=1

runs=0
failed=""
bench() {
    name=$1; shift
    runs=$((runs + 1))
    log="$out/$runs-$name.txt"
    echo "== $name: $*"
    start=$(date +%s)
    "$python" "benchmarks/$name.py" "$@" >"$log" 2>&1 || { tail -30 "$log"; failed="$failed $name"; return 0; }
    grep -v '^--max-\|^train: \|^valid: ' "$log" || true
    echo "== $name: $(( $(date +%s) - start )) s"
}

bench train_step --device cuda --archs "$archs" --precisions bf16 --batch base=auto --profile 12 --frozen-norm --world "$world"
bench generate --device cuda --archs "$archs" --precision bf16 --batches 1,32 --world "$world"
bench image_pipeline --device cuda
# torch.compile'd layers at the batch the plain run picks on an H200
bench train_step --device cuda --archs unify_base --precisions bf16 --batch base=256 --compile --world "$world"
[ -z "$failed" ] || { echo "failed:$failed"; exit 1; }

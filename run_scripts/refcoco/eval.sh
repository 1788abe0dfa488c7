#!/bin/sh
# Evaluate a refcoco checkpoint: acc@0.5 and mean IoU, boxes in original pixels.
#   CKPT=checkpoints/refcoco/checkpoint_best.pt DATA=refcoco_testA.tsv sh run_scripts/refcoco/eval.sh
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" evaluate.py --path "${CKPT:-checkpoints/refcoco/checkpoint_best.pt}" \
    --data "${DATA:-dataset/demo/refcoco_valid.tsv}" --results-dir "${RESULTS:-results/refcoco}" \
    --beam "${BEAM:-5}" --max-len-b 6 --batch-size "${BATCH:-64}" "$@"

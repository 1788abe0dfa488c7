#!/bin/sh
# Evaluate a caption checkpoint: BLEU-4, METEOR, ROUGE-L, CIDEr (pycocoevalcap, needs Java).
#   CKPT=checkpoints/caption/checkpoint_best.pt DATA=caption_test.tsv sh run_scripts/caption/eval.sh
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" evaluate.py --path "${CKPT:-checkpoints/caption/checkpoint_best.pt}" \
    --data "${DATA:-dataset/demo/caption_valid.tsv}" --results-dir "${RESULTS:-results/caption}" \
    --beam "${BEAM:-5}" --max-len-b 24 --batch-size "${BATCH:-64}" "$@"

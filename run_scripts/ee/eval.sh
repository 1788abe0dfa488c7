#!/bin/sh
# Evaluate a ee checkpoint: MUIE's micro P/R/F1 and grounded F1 (IoU >= 0.5), mean IoU, the
# malformed count and a breakdown per modality mix; predictions.jsonl holds the records in pixels
# and seconds.
#   CKPT=checkpoints/ee/checkpoint_best.pt DATA=m2e2_test.tsv sh run_scripts/ee/eval.sh
. "$(dirname "$0")/../eval_common.sh"
set -- ${SCHEMA:+--task-option "schema_file=$SCHEMA"} "$@"  # SCHEMA: the dataset's schema.json
eval_task ee dataset/demo/ee_valid.tsv 192 "$@"

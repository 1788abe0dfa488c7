#!/bin/sh
# Evaluate a re checkpoint: MUIE's micro P/R/F1 and grounded F1 (IoU >= 0.5), mean IoU, the
# malformed count and a breakdown per modality mix; predictions.jsonl holds the records in pixels
# and seconds.
#   CKPT=checkpoints/re/checkpoint_best.pt DATA=mnre_test.tsv sh run_scripts/re/eval.sh
. "$(dirname "$0")/../eval_common.sh"
set -- ${SCHEMA:+--task-option "schema_file=$SCHEMA"} "$@"  # SCHEMA: the dataset's schema.json
eval_task re dataset/demo/re_valid.tsv 128 "$@"

#!/bin/sh
# Evaluate a ner checkpoint: MUIE's micro P/R/F1 and grounded F1 (IoU >= 0.5), mean IoU, the
# malformed count and a breakdown per modality mix; predictions.jsonl holds the records in pixels
# and seconds.
#   CKPT=checkpoints/ner/checkpoint_best.pt DATA=gmner_test.tsv sh run_scripts/ner/eval.sh
. "$(dirname "$0")/../eval_common.sh"
set -- ${SCHEMA:+--task-option "schema_file=$SCHEMA"} "$@"  # SCHEMA: the dataset's schema.json
eval_task ner dataset/demo/ner_valid.tsv 128 "$@"

#!/bin/sh
# Evaluate a temporal grounding checkpoint: R@1 at IoU 0.3/0.5/0.7 and mean IoU; predictions.jsonl
# holds each span in seconds.
#   CKPT=checkpoints/temporal_grounding/checkpoint_best.pt DATA=charades_test.tsv sh run_scripts/temporal_grounding/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task temporal_grounding dataset/demo/temporal_valid.tsv 2 "$@"

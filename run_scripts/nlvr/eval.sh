#!/bin/sh
# Evaluate an nlvr checkpoint: accuracy of true / false.
#   CKPT=checkpoints/nlvr/checkpoint_best.pt DATA=nlvr_test.tsv sh run_scripts/nlvr/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task nlvr dataset/demo/nlvr_valid.tsv 4 "$@"

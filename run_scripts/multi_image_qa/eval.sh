#!/bin/sh
# Evaluate a multi_image_qa checkpoint: VQA soft accuracy (vqa_score).
#   CKPT=checkpoints/multi_image_qa/checkpoint_best.pt DATA=test.tsv sh run_scripts/multi_image_qa/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task multi_image_qa dataset/demo/multi_image_qa_valid.tsv 8 "$@"

#!/bin/sh
# Evaluate a vqa checkpoint: VQA soft accuracy (vqa_score) with beam search constrained to the
# checkpoint's candidate answers; predictions.jsonl holds each question's answer and references.
#   CKPT=checkpoints/vqa/checkpoint_best.pt DATA=vqa_test.tsv sh run_scripts/vqa/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task vqa dataset/demo/vqa_valid.tsv 8 "$@"

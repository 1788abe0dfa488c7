#!/bin/sh
# Evaluate a video_qa checkpoint: VQA soft accuracy (vqa_score) with beam search constrained to the
# checkpoint's candidate answers.
#   CKPT=checkpoints/video_qa/checkpoint_best.pt DATA=msrvttqa_test.tsv sh run_scripts/video_qa/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task video_qa dataset/demo/video_qa_valid.tsv 8 "$@"

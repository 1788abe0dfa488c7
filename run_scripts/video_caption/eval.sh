#!/bin/sh
# Evaluate a video caption checkpoint: BLEU-4, METEOR, ROUGE-L, CIDEr (pycocoevalcap, needs Java).
#   CKPT=checkpoints/video_caption/checkpoint_best.pt DATA=msrvtt_test.tsv sh run_scripts/video_caption/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task video_caption dataset/demo/video_caption_valid.tsv 32 "$@"

#!/bin/sh
# Evaluate a caption checkpoint: BLEU-4, METEOR, ROUGE-L, CIDEr (pycocoevalcap, needs Java).
#   CKPT=checkpoints/caption/checkpoint_best.pt DATA=caption_test.tsv sh run_scripts/caption/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task caption dataset/demo/caption_valid.tsv 32 "$@"

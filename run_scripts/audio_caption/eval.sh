#!/bin/sh
# Evaluate an audio caption checkpoint: BLEU-4, METEOR, ROUGE-L, CIDEr (pycocoevalcap, needs Java).
#   CKPT=checkpoints/audio_caption/checkpoint_best.pt DATA=audiocaps_test.tsv sh run_scripts/audio_caption/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task audio_caption dataset/demo/audio_caption_valid.tsv 24 "$@"

#!/bin/sh
# Evaluate an snli_ve checkpoint: accuracy over entailment / neutral / contradiction.
#   CKPT=checkpoints/snli_ve/checkpoint_best.pt DATA=snli_ve_test.tsv sh run_scripts/snli_ve/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task snli_ve dataset/demo/snli_ve_valid.tsv 4 "$@"

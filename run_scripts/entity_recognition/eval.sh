#!/bin/sh
# Evaluate an entity_recognition checkpoint: accuracy, and seen / unseen accuracy with their
# harmonic mean when the rows carry "seen"; the catalogue is the one the checkpoint was trained with.
#   CKPT=checkpoints/entity_recognition/checkpoint_best.pt DATA=entity_test.tsv \
#   sh run_scripts/entity_recognition/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task entity_recognition dataset/demo/entity_valid.tsv 24 "$@"

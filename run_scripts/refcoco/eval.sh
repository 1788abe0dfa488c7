#!/bin/sh
# Evaluate a refcoco checkpoint: acc@0.5 and mean IoU, boxes in original pixels.
#   CKPT=checkpoints/refcoco/checkpoint_best.pt DATA=refcoco_testA.tsv sh run_scripts/refcoco/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task refcoco dataset/demo/refcoco_valid.tsv 6 "$@"

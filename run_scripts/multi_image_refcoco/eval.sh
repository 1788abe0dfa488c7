#!/bin/sh
# Evaluate a multi_image_refcoco checkpoint: acc@0.5 and mean IoU, a box counting only on the right image.
#   CKPT=checkpoints/multi_image_refcoco/checkpoint_best.pt DATA=test.tsv sh run_scripts/multi_image_refcoco/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task multi_image_refcoco dataset/demo/multi_image_refcoco_valid.tsv 7 "$@"

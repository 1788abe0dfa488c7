#!/bin/sh
# Evaluate a refseg checkpoint: cIoU, mIoU and acc@0.5 of the predicted masks at the original
# resolution; predictions.jsonl holds the polygons in original pixels and each row's IoU.
#   CKPT=checkpoints/refseg/checkpoint_best.pt DATA=refseg_testA.tsv sh run_scripts/refseg/eval.sh
. "$(dirname "$0")/../eval_common.sh"
eval_task refseg dataset/demo/refseg_valid.tsv 200 "$@"

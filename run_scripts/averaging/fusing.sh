#!/bin/sh
# Fusing: average the auxiliary (task-specialised) models, then fine-tune the target task from
# the average.
#   TARGET=refcoco sh run_scripts/averaging/fusing.sh
. "$(dirname "$0")/common.sh"
specialised_models
average "$OUT/fused_init.pt" "$OUT/caption/checkpoint_last.pt" "$OUT/refcoco/checkpoint_last.pt"
finetune "$TARGET" "$OUT/fused_init.pt" "$OUT/fused" "$FINETUNE_UPDATES"
score fused "$OUT/fused/checkpoint_last.pt" "$TARGET"
table fused

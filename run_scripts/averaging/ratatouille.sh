#!/bin/sh
# Ratatouille: fine-tune the target task from each auxiliary (task-specialised) model, then
# average the fine-tuned models.
#   TARGET=refcoco sh run_scripts/averaging/ratatouille.sh
. "$(dirname "$0")/common.sh"
specialised_models
for aux in caption refcoco; do
    finetune "$TARGET" "$OUT/$aux/checkpoint_last.pt" "$OUT/ratatouille/from_$aux" "$FINETUNE_UPDATES"
done
average "$OUT/ratatouille.pt" "$OUT/ratatouille/from_caption/checkpoint_last.pt" \
    "$OUT/ratatouille/from_refcoco/checkpoint_last.pt"
score ratatouille "$OUT/ratatouille.pt" "$TARGET"
table ratatouille

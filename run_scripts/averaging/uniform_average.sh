#!/bin/sh
# Uniform average of task-specialised models: a shared multitask initialisation, one model
# fine-tuned per task from it, then their weight average, each scored on every task.
#   sh run_scripts/averaging/uniform_average.sh
. "$(dirname "$0")/common.sh"
specialised_models
average "$OUT/uniform.pt" "$OUT/caption/checkpoint_last.pt" "$OUT/refcoco/checkpoint_last.pt"
for task in caption refcoco; do
    score caption "$OUT/caption/checkpoint_last.pt" "$task"
    score refcoco "$OUT/refcoco/checkpoint_last.pt" "$task"
    score uniform "$OUT/uniform.pt" "$task"
done
table caption refcoco uniform

#!/bin/sh
# Multitask training: a weighted mixture of registered tasks, one task per batch. Defaults train
# unify_tiny on the demo's caption and refcoco (run_scripts/train_common.sh lists the settings the
# environment overrides; TASKS sets the ratios, MAX_LEN the longest output validation generates). For example:
#   DATA="caption=c_train.tsv,c_val.tsv;refcoco=r_train.tsv,r_val.tsv" TASKS=caption:0.3,refcoco:0.7 \
#   VOCAB=vocab ARCH=unify_base PATCH=384 sh run_scripts/multitask/train.sh --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
demo=dataset/demo
train_task --task multitask \
    --data "caption=$demo/caption_train.tsv,$demo/caption_valid.tsv;refcoco=$demo/refcoco_train.tsv,$demo/refcoco_valid.tsv" \
    --updates 2000 --lr 1e-3 --best-metric score --max-output-tokens "${MAX_LEN:-24}" -- \
    --tasks "${TASKS:-caption:0.3,refcoco:0.7}" "$@"

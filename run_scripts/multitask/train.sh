#!/bin/sh
# Multitask training: a weighted mixture of registered tasks, one task per batch. Defaults train
# unify_tiny on the demo's caption and refcoco; override from the environment, e.g.
#   DATA="caption=c_train.tsv,c_val.tsv;refcoco=r_train.tsv,r_val.tsv" TASKS=caption:0.3,refcoco:0.7 \
#   VOCAB=vocab ARCH=unify_base PATCH=384 sh run_scripts/multitask/train.sh --bf16
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
DEMO=dataset/demo
DATA=${DATA:-"caption=$DEMO/caption_train.tsv,$DEMO/caption_valid.tsv;refcoco=$DEMO/refcoco_train.tsv,$DEMO/refcoco_valid.tsv"}
"$PYTHON" train.py "$DATA" \
    --task multitask --tasks "${TASKS:-caption:0.3,refcoco:0.7}" \
    --vocab-dir "${VOCAB:-dataset/demo/vocab}" --arch "${ARCH:-unify_tiny}" --patch-image-size "${PATCH:-64}" \
    --max-tgt-length 24 --criterion constrained_label_smoothed_cross_entropy \
    --label-smoothing "${LABEL_SMOOTHING:-0.0}" --dropout "${DROPOUT:-0.0}" \
    --optimizer adam --adam-betas '(0.9, 0.999)' --weight-decay 0.01 --clip-norm 1.0 \
    --lr "${LR:-1e-3}" --lr-scheduler polynomial_decay --warmup-updates "${WARMUP:-200}" \
    --total-num-update "${MAX_UPDATE:-2000}" --max-update "${MAX_UPDATE:-2000}" \
    --batch-size "${BATCH:-32}" --num-workers "${WORKERS:-1}" \
    --eval-metrics --eval-args '{"beam": 1, "max_len_b": 24}' \
    --best-checkpoint-metric score --maximize-best-checkpoint-metric \
    --validate-interval-updates "${VALID_EVERY:-1000}" --save-interval-updates "${VALID_EVERY:-1000}" \
    --validate-interval 1000 --save-interval 1000 --keep-interval-updates 1 --no-epoch-checkpoints \
    --save-dir "${SAVE_DIR:-checkpoints/multitask}" --log-format simple --log-interval 100 --seed "${SEED:-1}" "$@"

#!/bin/sh
# Visual grounding (refcoco): text + image -> four bin tokens.
# Defaults train unify_tiny on the demo data; every setting can be overridden from the
# environment and any extra fairseq option appended, e.g. for RefCOCO with unify_base:
#   DATA=refcoco_train.tsv,refcoco_val.tsv VOCAB=vocab ARCH=unify_base PATCH=512 BATCH=16 \
#   MAX_UPDATE=50000 sh run_scripts/refcoco/train.sh --update-freq 4 --bf16
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-dataset/demo/refcoco_train.tsv,dataset/demo/refcoco_valid.tsv}
"$PYTHON" train.py "$DATA" \
    --task refcoco --vocab-dir "${VOCAB:-dataset/demo/vocab}" --arch "${ARCH:-unify_tiny}" \
    --patch-image-size "${PATCH:-64}" --crop-prob "${CROP_PROB:-0.0}" \
    --criterion constrained_label_smoothed_cross_entropy --label-smoothing "${LABEL_SMOOTHING:-0.0}" --dropout "${DROPOUT:-0.0}" \
    --optimizer adam --adam-betas '(0.9, 0.999)' --weight-decay 0.01 --clip-norm 1.0 \
    --lr "${LR:-2e-3}" --lr-scheduler polynomial_decay --warmup-updates "${WARMUP:-200}" \
    --total-num-update "${MAX_UPDATE:-2000}" \
    --batch-size "${BATCH:-32}" --max-update "${MAX_UPDATE:-2000}" --num-workers "${WORKERS:-1}" \
    --eval-metrics --eval-args '{"beam": 1, "max_len_b": 6}' \
    --best-checkpoint-metric acc@0.5 --maximize-best-checkpoint-metric \
    --validate-interval-updates "${VALID_EVERY:-1000}" --save-interval-updates "${VALID_EVERY:-1000}" \
    --validate-interval 1000 --save-interval 1000 \
    --keep-interval-updates 1 --no-epoch-checkpoints \
    --save-dir "${SAVE_DIR:-checkpoints/refcoco}" --log-format simple --log-interval 100 --seed "${SEED:-1}" "$@"

#!/bin/sh
# Image captioning: image -> caption. Defaults train unify_tiny on the demo data; override
# settings from the environment and append fairseq options, e.g. for COCO with unify_base:
#   DATA=caption_train.tsv,caption_val.tsv VOCAB=vocab ARCH=unify_base PATCH=384 BATCH=32 \
#   MAX_UPDATE=100000 sh run_scripts/caption/train.sh --bf16
set -eu
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-dataset/demo/caption_train.tsv,dataset/demo/caption_valid.tsv}
"$PYTHON" train.py "$DATA" \
    --task caption --vocab-dir "${VOCAB:-dataset/demo/vocab}" --arch "${ARCH:-unify_tiny}" \
    --patch-image-size "${PATCH:-64}" --max-tgt-length 24 \
    --criterion constrained_label_smoothed_cross_entropy --label-smoothing "${LABEL_SMOOTHING:-0.0}" --dropout "${DROPOUT:-0.0}" \
    --optimizer adam --adam-betas '(0.9, 0.999)' --weight-decay 0.01 --clip-norm 1.0 \
    --lr "${LR:-2e-3}" --lr-scheduler polynomial_decay --warmup-updates "${WARMUP:-200}" \
    --total-num-update "${MAX_UPDATE:-800}" \
    --batch-size "${BATCH:-32}" --max-update "${MAX_UPDATE:-800}" --num-workers "${WORKERS:-1}" \
    --eval-metrics --eval-args '{"beam": 1, "max_len_b": 24}' \
    --best-checkpoint-metric cider --maximize-best-checkpoint-metric \
    --validate-interval-updates "${VALID_EVERY:-1000}" --save-interval-updates "${VALID_EVERY:-1000}" \
    --validate-interval 1000 --save-interval 1000 \
    --keep-interval-updates 1 --no-epoch-checkpoints \
    --save-dir "${SAVE_DIR:-checkpoints/caption}" --log-format simple --log-interval 100 --seed "${SEED:-1}" "$@"

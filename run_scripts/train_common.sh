# Sourced by run_scripts/<task>/train.sh: the training options every task shares. POSIX sh.
# Every setting can be overridden from the environment:
#   DATA VOCAB ARCH PATCH LR WARMUP MAX_UPDATE BATCH WORKERS LABEL_SMOOTHING DROPOUT VALID_EVERY SAVE_DIR SEED
set -eu
cd "$(dirname "$0")/../.."
. run_scripts/interpreter.sh

# train_task TASK DEFAULT_DATA DEFAULT_UPDATES DEFAULT_LR BEST_METRIC MAX_OUTPUT_TOKENS [fairseq options...]
train_task() {
    task=$1 updates=${MAX_UPDATE:-$3} metric=$5 max_len=$6
    data=${DATA:-$2} lr=${LR:-$4} every=${VALID_EVERY:-1000}
    shift 6
    "$PYTHON" train.py "$data" \
        --task "$task" --vocab-dir "${VOCAB:-dataset/demo/vocab}" --arch "${ARCH:-unify_tiny}" \
        --patch-image-size "${PATCH:-64}" --criterion constrained_label_smoothed_cross_entropy \
        --label-smoothing "${LABEL_SMOOTHING:-0.0}" --dropout "${DROPOUT:-0.0}" \
        --optimizer adam --adam-betas '(0.9, 0.999)' --weight-decay 0.01 --clip-norm 1.0 \
        --lr "$lr" --lr-scheduler polynomial_decay --warmup-updates "${WARMUP:-200}" \
        --total-num-update "$updates" --max-update "$updates" \
        --batch-size "${BATCH:-32}" --num-workers "${WORKERS:-1}" \
        --eval-metrics --eval-args "{\"beam\": 1, \"max_len_b\": $max_len}" \
        --best-checkpoint-metric "$metric" --maximize-best-checkpoint-metric \
        --validate-interval-updates "$every" --save-interval-updates "$every" \
        --validate-interval 1000 --save-interval 1000 --keep-interval-updates 1 --no-epoch-checkpoints \
        --save-dir "${SAVE_DIR:-checkpoints/$task}" --log-format simple --log-interval 100 \
        --seed "${SEED:-1}" "$@"
}

# Sourced by run_scripts/<task>/train.sh: the training options every task shares. POSIX sh.
# Every setting can be overridden from the environment:
#   DATA VOCAB ARCH PATCH LR WARMUP MAX_UPDATE BATCH WORKERS LABEL_SMOOTHING DROPOUT VALID_EVERY SAVE_DIR SEED
set -eu
cd "$(dirname "$0")/../.."
. run_scripts/interpreter.sh

# train_task --task TASK --data DEFAULT_DATA --updates DEFAULT_UPDATES --lr DEFAULT_LR
#            --best-metric METRIC --max-output-tokens TOKENS [-- fairseq options...]
# A task's recipe: its data, update count and learning rate (the defaults DATA, MAX_UPDATE and LR
# override), the validation metric that picks checkpoint_best.pt, and the longest output validation
# generates.
train_task() {
    task='' data=${DATA:-} updates=${MAX_UPDATE:-} lr=${LR:-} metric='' max_len=''
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        [ $# -ge 2 ] || { echo "train_task: $1 needs a value" >&2; return 2; }
        case $1 in
            --task) task=$2 ;;
            --data) data=${DATA:-$2} ;;
            --updates) updates=${MAX_UPDATE:-$2} ;;
            --lr) lr=${LR:-$2} ;;
            --best-metric) metric=$2 ;;
            --max-output-tokens) max_len=$2 ;;
            *) echo "train_task: unknown option $1" >&2; return 2 ;;
        esac
        shift 2
    done
    [ $# -eq 0 ] || shift  # the --
    if [ -z "$task" ] || [ -z "$data" ] || [ -z "$updates" ] || [ -z "$lr" ] || [ -z "$metric" ] || [ -z "$max_len" ]; then
        echo "train_task needs --task, --data, --updates, --lr, --best-metric and --max-output-tokens" >&2
        return 2
    fi
    every=${VALID_EVERY:-1000}
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

# Sourced by run_scripts/<task>/eval.sh. Settings from the environment: CKPT DATA RESULTS BEAM BATCH.
set -eu
cd "$(dirname "$0")/../.."
. run_scripts/interpreter.sh

# eval_task TASK DEFAULT_DATA MAX_OUTPUT_TOKENS [evaluate.py options...]
eval_task() {
    task=$1 data=${DATA:-$2} max_len=$3
    shift 3
    "$PYTHON" evaluate.py --path "${CKPT:-checkpoints/$task/checkpoint_best.pt}" --data "$data" \
        --results-dir "${RESULTS:-results/$task}" --beam "${BEAM:-5}" --max-len-b "$max_len" \
        --batch-size "${BATCH:-64}" "$@"
}

# Steps shared by the model-merging recipes; sourced by them. POSIX sh.
# Demo defaults: unify_tiny on the demo's caption and refcoco; every budget can be overridden.
set -eu
cd "$(dirname "$0")/../.."
. run_scripts/interpreter.sh
OUT=${OUT:-checkpoints/averaging}
RESULTS=${RESULTS:-results/averaging}
INIT_UPDATES=${INIT_UPDATES:-800}       # shared initialisation (multitask)
SPECIALISE_UPDATES=${SPECIALISE_UPDATES:-600}
TARGET=${TARGET:-refcoco}               # the task ratatouille and fusing fine-tune for
FINETUNE_UPDATES=${FINETUNE_UPDATES:-400}

# finetune TASK FROM_CHECKPOINT SAVE_DIR UPDATES: train TASK starting from another model's weights
finetune() {
    [ -f "$3/checkpoint_last.pt" ] && return 0
    SAVE_DIR="$3" MAX_UPDATE="$4" WARMUP=50 VALID_EVERY="$4" sh "run_scripts/$1/train.sh" \
        --restore-file "$2" --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler
}

# specialised_models: the shared init, then one model per task fine-tuned from it
specialised_models() {
    if [ ! -f "$OUT/init/checkpoint_last.pt" ]; then
        SAVE_DIR="$OUT/init" MAX_UPDATE="$INIT_UPDATES" VALID_EVERY="$INIT_UPDATES" \
            sh run_scripts/multitask/train.sh
    fi
    for task in caption refcoco; do
        finetune "$task" "$OUT/init/checkpoint_last.pt" "$OUT/$task" "$SPECIALISE_UPDATES"
    done
}

# average OUTPUT INPUT...: uniform weight average
average() {
    output=$1
    shift
    "$PYTHON" preprocess/average_save_models.py --inputs "$@" --output "$output"
}

# score NAME CHECKPOINT TASK: evaluate a checkpoint as TASK on the demo validation split
score() {
    "$PYTHON" evaluate.py --path "$2" --task "$3" --data "dataset/demo/$3_valid.tsv" \
        --results-dir "$RESULTS/$1/$3" --beam 5 --batch-size 64 > /dev/null
}

# table NAME...: the primary metrics of each evaluated model
table() {
    "$PYTHON" - "$RESULTS" "$@" <<'PY'
import json, os, sys
results, names = sys.argv[1], sys.argv[2:]
print(f"{'model':<24} {'caption CIDEr':>14} {'refcoco acc@0.5':>16}")
for name in names:
    cells = []
    for task, metric in (("caption", "CIDEr"), ("refcoco", "acc@0.5")):
        path = os.path.join(results, name, task, "metrics.json")
        cells.append(f"{json.load(open(path))[metric]:.3f}" if os.path.exists(path) else "-")
    print(f"{name:<24} {cells[0]:>14} {cells[1]:>16}")
PY
}

#!/bin/sh
# The main job on a bare machine: set up .venv, generate the demo world, build the vocabulary,
# train unify_tiny on caption and refcoco from scratch on the CPU, evaluate both, and print
# the metrics beside trivial baselines.
#   sh run_scripts/quickstart.sh
set -eu
cd "$(dirname "$0")/.."
start=$(date +%s)
. run_scripts/setup_env.sh
"$PYTHON" preprocess/make_demo_data.py --out dataset/demo
"$PYTHON" preprocess/build_vocab.py --out-dir dataset/demo/vocab --vocab-size 1000 \
    --input dataset/demo/caption_train.tsv:2 --input dataset/demo/refcoco_train.tsv:2
for task in caption refcoco; do
    rm -rf "checkpoints/$task"
    sh "run_scripts/$task/train.sh"
    sh "run_scripts/$task/eval.sh"
done
"$PYTHON" run_scripts/demo_summary.py --demo-dir dataset/demo --results-dir results
echo "quickstart finished in $(( $(date +%s) - start )) s"

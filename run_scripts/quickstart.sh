#!/bin/sh
# The main job on a bare machine: set up .venv, generate the demo world (images, videos, sound
# clips, IE rows), build the vocabulary, train one unify_tiny from scratch on the CPU on the mixture
# of image, video, audio and grounded-IE tasks, evaluate each task, and print the metrics beside
# trivial baselines.
#   sh run_scripts/quickstart.sh
# MAX_UPDATE (default 4000) trades time for quality; the other run_scripts/train_common.sh
# settings apply too.
set -eu
cd "$(dirname "$0")/.."
start=$(date +%s)

# stage DESCRIPTION COMMAND...: say what runs, run it, say how long it took
stage() {
    what=$1
    shift
    echo "== $what"
    stage_start=$(date +%s)
    "$@"
    echo "== $what: done in $(( $(date +%s) - stage_start )) s"
}

stage "set-up (.venv, Java)" . run_scripts/setup_env.sh
demo=dataset/demo
stage "demo data" "$PYTHON" preprocess/make_demo_data.py --out "$demo"
stage "vocabulary" "$PYTHON" preprocess/build_vocab.py --out-dir "$demo/vocab" --vocab-size 1000 \
    --input "$demo/caption_train.tsv:2" --input "$demo/refcoco_train.tsv:2" \
    --input "$demo/video_caption_train.tsv:2" --input "$demo/audio_caption_train.tsv:2" \
    --input "$demo/video_qa_train.tsv:2" --input "$demo/temporal_train.tsv:4" --input "$demo/ner_train.tsv:4"
tasks="caption refcoco video_caption audio_caption video_qa temporal_grounding ner"
data=""
for task in $tasks; do
    file=$task
    [ "$task" = temporal_grounding ] && file=temporal
    data="$data$task=$demo/${file}_train.tsv,$demo/${file}_valid.tsv;"
done
rm -rf checkpoints/demo results
stage "training (progress lines every few seconds)" env DATA="$data" SAVE_DIR=checkpoints/demo \
    MAX_UPDATE="${MAX_UPDATE:-4000}" VALID_EVERY="${VALID_EVERY:-2000}" MAX_LEN=96 \
    TASKS=caption:0.1,refcoco:0.25,video_caption:0.1,audio_caption:0.1,video_qa:0.1,temporal_grounding:0.25,ner:0.1 \
    sh run_scripts/multitask/train.sh --num-frames 8 --video-frame-size 32
for task in $tasks; do
    stage "evaluating $task" env CKPT=checkpoints/demo/checkpoint_best.pt RESULTS="results/$task" \
        sh "run_scripts/$task/eval.sh" --task "$task"
done
stage "summary" "$PYTHON" run_scripts/demo_summary.py --demo-dir "$demo" --results-dir results
echo "quickstart finished in $(( $(date +%s) - start )) s"

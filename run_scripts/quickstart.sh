#!/bin/sh
# The main job on a bare machine: set up .venv, generate the demo world (images, videos, sound
# clips, IE rows), build the vocabulary, train one unify_tiny from scratch on the CPU on the mixture
# of image, video, audio and grounded-IE tasks, evaluate each task, and print the metrics beside
# trivial baselines. About ten minutes on two idle cores.
#   sh run_scripts/quickstart.sh
#   FULL=1 sh run_scripts/quickstart.sh    # the longer run: a larger world, 4000 updates, validation
#   MULTI_IMAGE=1 sh run_scripts/quickstart.sh    # then fine-tune on the multi-image tasks (on with FULL=1)
# GROUNDING_UPDATES (the first stage) and MAX_UPDATE (the mixture) trade time for quality; the other
# run_scripts/train_common.sh settings apply too.
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
if [ "${FULL:-0}" = 1 ]; then
    world="--train-images 3000 --valid-images 200 --train-videos 600 --valid-videos 60 --train-audio 600
        --valid-audio 60 --train-ie 1500 --valid-ie 150"
    updates=${MAX_UPDATE:-4000} checkpoint=checkpoint_best.pt validation=""
else  # no validation while training: the evaluation below scores the last checkpoint
    world="" updates=${MAX_UPDATE:-650} checkpoint=checkpoint_last.pt validation=--disable-validation
fi
# positions in every layer but in only 2 of the 4 heads, so the other 2 read the text; a head that scores
# each image cell for lying in the region the text refers to, which the region loss trains (README, "Grounding")
model="--layer-positions --position-heads 2 --region-head"
# shellcheck disable=SC2086  # $world is a list of options
stage "demo data" "$PYTHON" preprocess/make_demo_data.py --out "$demo" $world
# 100 bins a side are plenty for 128-pixel images, and fewer classes to tell apart than the default 1000
bins=100
stage "vocabulary" "$PYTHON" preprocess/build_vocab.py --out-dir "$demo/vocab" --vocab-size 1000 --num-bins $bins \
    --input "$demo/caption_train.tsv:2" --input "$demo/refcoco_train.tsv:2" \
    --input "$demo/video_caption_train.tsv:2" --input "$demo/audio_caption_train.tsv:2" \
    --input "$demo/video_qa_train.tsv:2" --input "$demo/temporal_train.tsv:4" --input "$demo/ner_train.tsv:4"
tasks="caption refcoco refseg video_caption audio_caption video_qa temporal_grounding ner"
data=""
for task in $tasks; do
    file=$task
    [ "$task" = temporal_grounding ] && file=temporal
    data="$data$task=$demo/${file}_train.tsv,$demo/${file}_valid.tsv;"
done
training="--num-frames 8 --video-frame-size 32 --num-bins $bins --bin-smoothing 0.02 $model --region-loss-weight 10 $validation"
rm -rf checkpoints/demo_grounding checkpoints/demo checkpoints/demo_multi_image results
# grounding first: refcoco and refseg alone learn to read the expression and find its region, which
# in the mixture they learn late or not at all; the mixture then starts from that model (README, "Grounding")
grounding="refcoco=$demo/refcoco_train.tsv,$demo/refcoco_valid.tsv;refseg=$demo/refseg_train.tsv,$demo/refseg_valid.tsv;"
stage "training grounding first (progress lines every few seconds)" env DATA="$grounding" \
    SAVE_DIR=checkpoints/demo_grounding MAX_UPDATE="${GROUNDING_UPDATES:-450}" VALID_EVERY="${VALID_EVERY:-2000}" \
    MAX_LEN=128 LR="${LR:-2e-3}" WARMUP="${WARMUP:-100}" TASKS=refcoco:0.6,refseg:0.4 \
    sh run_scripts/multitask/train.sh $training
stage "training the mixture from it" env DATA="$data" SAVE_DIR=checkpoints/demo \
    MAX_UPDATE="$updates" VALID_EVERY="${VALID_EVERY:-2000}" MAX_LEN=128 LR="${LR:-2e-3}" WARMUP="${WARMUP:-100}" \
    TASKS=caption:0.09,refcoco:0.2,refseg:0.14,video_caption:0.08,audio_caption:0.07,video_qa:0.08,temporal_grounding:0.2,ner:0.14 \
    sh run_scripts/multitask/train.sh $training --finetune-from-model checkpoints/demo_grounding/checkpoint_last.pt
for task in $tasks; do
    stage "evaluating $task" env CKPT=checkpoints/demo/$checkpoint RESULTS="results/$task" \
        sh "run_scripts/$task/eval.sh" --task "$task"
done
# MULTI_IMAGE=1 (the default with FULL=1): the model above fine-tuned on the tasks over pairs of scenes
if [ "${MULTI_IMAGE:-${FULL:-0}}" = 1 ]; then
    multi_tasks="nlvr multi_image_qa multi_image_refcoco" data=""
    for task in $multi_tasks; do
        data="$data$task=$demo/${task}_train.tsv,$demo/${task}_valid.tsv;"
    done
    stage "training the multi-image tasks from it" env DATA="$data" SAVE_DIR=checkpoints/demo_multi_image \
        MAX_UPDATE="${MULTI_IMAGE_UPDATES:-300}" VALID_EVERY="${VALID_EVERY:-2000}" MAX_LEN=7 LR=5e-4 WARMUP=20 \
        TASKS=nlvr:0.3,multi_image_qa:0.3,multi_image_refcoco:0.4 \
        sh run_scripts/multitask/train.sh --num-bins $bins --bin-smoothing 0.02 $model $validation \
        --finetune-from-model "checkpoints/demo/$checkpoint"
    for task in $multi_tasks; do
        stage "evaluating $task" env CKPT=checkpoints/demo_multi_image/$checkpoint RESULTS="results/$task" \
            sh "run_scripts/$task/eval.sh" --task "$task"
    done
fi
stage "summary" "$PYTHON" run_scripts/demo_summary.py --demo-dir "$demo" --results-dir results
echo "quickstart finished in $(( $(date +%s) - start )) s"

#!/bin/sh
# Temporal grounding: a query and a video or audio clip -> its span as two time tokens. Defaults
# train unify_tiny on the demo clips (run_scripts/train_common.sh lists the settings the environment
# overrides; FRAMES, FRAME_SIZE and AUDIO_SECONDS shape the clips); extra arguments go to fairseq.
# Charades-STA with unify_base:
#   DATA=charades_train.tsv,charades_val.tsv VOCAB=vocab ARCH=unify_base FRAMES=32 FRAME_SIZE=224 \
#   LR=1e-4 MAX_UPDATE=30000 sh run_scripts/temporal_grounding/train.sh --media-dir videos --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
train_task --task temporal_grounding --data dataset/demo/temporal_train.tsv,dataset/demo/temporal_valid.tsv \
    --updates 1500 --lr 1e-3 --best-metric r1@0.5 --max-output-tokens 2 -- \
    --num-frames "${FRAMES:-8}" --video-frame-size "${FRAME_SIZE:-64}" \
    --max-audio-seconds "${AUDIO_SECONDS:-10}" "$@"

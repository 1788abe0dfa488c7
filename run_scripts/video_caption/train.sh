#!/bin/sh
# Video captioning: video -> caption. Defaults train unify_tiny on the demo videos
# (run_scripts/train_common.sh lists the settings the environment overrides; FRAMES and FRAME_SIZE
# set the sampled frames and their side); extra arguments go to fairseq. MSR-VTT with unify_base:
#   DATA=msrvtt_train.tsv,msrvtt_val.tsv VOCAB=vocab ARCH=unify_base FRAMES=16 FRAME_SIZE=224 \
#   LR=1e-4 MAX_UPDATE=50000 sh run_scripts/video_caption/train.sh --media-dir videos --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
train_task --task video_caption --data dataset/demo/video_caption_train.tsv,dataset/demo/video_caption_valid.tsv \
    --updates 600 --lr 2e-3 --best-metric cider --max-output-tokens 24 -- \
    --num-frames "${FRAMES:-8}" --video-frame-size "${FRAME_SIZE:-64}" "$@"

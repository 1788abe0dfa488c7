#!/bin/sh
# Video question answering: question + video -> one of the candidate answers, as run_scripts/vqa
# does it for images (candidates from --answers-file or the training rows; --eval-mode candidates).
# Defaults train unify_tiny on the demo videos (run_scripts/train_common.sh lists the settings the
# environment overrides; FRAMES and FRAME_SIZE shape the clips). MSRVTT-QA with unify_base:
#   DATA=msrvttqa_train.tsv,msrvttqa_val.tsv VOCAB=vocab ARCH=unify_base FRAMES=16 FRAME_SIZE=224 \
#   LR=5e-5 MAX_UPDATE=50000 sh run_scripts/video_qa/train.sh --answers-file answers.txt --media-dir videos --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
train_task --task video_qa --data dataset/demo/video_qa_train.tsv,dataset/demo/video_qa_valid.tsv \
    --updates 1000 --lr 1e-3 --best-metric vqa_score --max-output-tokens 8 -- \
    --num-frames "${FRAMES:-8}" --video-frame-size "${FRAME_SIZE:-64}" "$@"

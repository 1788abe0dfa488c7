#!/bin/sh
# Audio captioning: audio -> caption. Defaults train unify_tiny on the demo sound clips
# (run_scripts/train_common.sh lists the settings the environment overrides; AUDIO_SECONDS sets the
# window); extra arguments go to fairseq. Clotho or AudioCaps with unify_base:
#   DATA=audiocaps_train.tsv,audiocaps_val.tsv VOCAB=vocab ARCH=unify_base AUDIO_SECONDS=10 \
#   LR=1e-4 MAX_UPDATE=50000 sh run_scripts/audio_caption/train.sh --media-dir audio --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
train_task --task audio_caption --data dataset/demo/audio_caption_train.tsv,dataset/demo/audio_caption_valid.tsv \
    --updates 600 --lr 2e-3 --best-metric cider --max-output-tokens 24 -- \
    --max-audio-seconds "${AUDIO_SECONDS:-10}" "$@"

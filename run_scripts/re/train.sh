#!/bin/sh
# Grounded multimodal relation extraction (re): image, video, audio and/or text -> relation records in the grammar of
# DESIGN.md section 5, each mention grounded where it lives, generation constrained by that grammar.
# Defaults train unify_tiny on the demo rows of all ten modality mixes (run_scripts/train_common.sh
# lists the settings the environment overrides; FRAMES, FRAME_SIZE and AUDIO_SECONDS shape clips).
# MNRE (preprocess/mnre_to_tsv.py) with unify_base, for example:
#   DATA=mnre_train.tsv,mnre_val.tsv VOCAB=vocab ARCH=unify_base PATCH=384 LR=1e-4 \
#   MAX_UPDATE=30000 sh run_scripts/re/train.sh --media-dir images --schema-file schema.json --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
train_task re dataset/demo/re_train.tsv,dataset/demo/re_valid.tsv 3000 1e-3 relation/grounded_f1 96 \
    --num-frames "${FRAMES:-8}" --video-frame-size "${FRAME_SIZE:-32}" \
    --max-audio-seconds "${AUDIO_SECONDS:-10}" "$@"

#!/bin/sh
# Grounded multimodal entity recognition (ner): image, video, audio and/or text -> entity records in the grammar of
# DESIGN.md section 5, each mention grounded where it lives, generation constrained by that grammar.
# Defaults train unify_tiny on the demo rows of all ten modality mixes (run_scripts/train_common.sh
# lists the settings the environment overrides; FRAMES, FRAME_SIZE and AUDIO_SECONDS shape clips).
# Twitter-GMNER (preprocess/gmner_to_tsv.py) with unify_base, for example:
#   DATA=dataset/gmner/train.tsv,dataset/gmner/dev.tsv SCHEMA=dataset/gmner/schema.json VOCAB=vocab \
#   ARCH=unify_base PATCH=384 LR=1e-4 MAX_UPDATE=30000 sh run_scripts/ner/train.sh --media-dir images --bf16-autocast
# SCHEMA (the schema.json a converter writes beside its TSVs) is offered to rows without their own.
. "$(dirname "$0")/../train_common.sh"
set -- ${SCHEMA:+--schema-file "$SCHEMA"} "$@"
train_task --task ner --data dataset/demo/ner_train.tsv,dataset/demo/ner_valid.tsv \
    --updates 3000 --lr 1e-3 --best-metric entity/grounded_f1 --max-output-tokens 128 -- \
    --num-frames "${FRAMES:-8}" --video-frame-size "${FRAME_SIZE:-32}" \
    --max-audio-seconds "${AUDIO_SECONDS:-10}" "$@"

#!/bin/sh
# Image captioning: image -> caption. Defaults train unify_tiny on the demo data
# (run_scripts/train_common.sh lists the settings the environment overrides); extra arguments go
# to fairseq. COCO with unify_base, for example:
#   DATA=caption_train.tsv,caption_val.tsv VOCAB=vocab ARCH=unify_base PATCH=384 LR=1e-4 \
#   MAX_UPDATE=100000 sh run_scripts/caption/train.sh --bf16-autocast --label-smoothing 0.1
. "$(dirname "$0")/../train_common.sh"
train_task --task caption --data dataset/demo/caption_train.tsv,dataset/demo/caption_valid.tsv \
    --updates 600 --lr 2e-3 --best-metric cider --max-output-tokens 24 -- "$@"

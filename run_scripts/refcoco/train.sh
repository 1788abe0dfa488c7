#!/bin/sh
# Visual grounding (refcoco): text + image -> four bin tokens. Defaults train unify_tiny on the
# demo data (run_scripts/train_common.sh lists the settings the environment overrides); extra
# arguments go to fairseq. RefCOCO with unify_base, for example:
#   DATA=refcoco_train.tsv,refcoco_val.tsv VOCAB=vocab ARCH=unify_base PATCH=512 BATCH=16 LR=5e-5 \
#   MAX_UPDATE=50000 sh run_scripts/refcoco/train.sh --update-freq 4 --bf16-autocast --crop-prob 0.5
. "$(dirname "$0")/../train_common.sh"
train_task --task refcoco --data dataset/demo/refcoco_train.tsv,dataset/demo/refcoco_valid.tsv \
    --updates 2000 --lr 1e-3 --best-metric acc@0.5 --max-output-tokens 6 -- "$@"

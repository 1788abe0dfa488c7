#!/bin/sh
# Visual entailment (snli_ve): hypothesis + image -> yes / maybe / no (entailment, neutral,
# contradiction), constrained to the three answers. Defaults train unify_tiny on the demo data
# (run_scripts/train_common.sh lists the settings the environment overrides); extra arguments go
# to fairseq. SNLI-VE with unify_base, for example:
#   DATA=snli_ve_train.tsv,snli_ve_dev.tsv VOCAB=vocab ARCH=unify_base PATCH=480 BATCH=16 LR=5e-5 \
#   MAX_UPDATE=50000 sh run_scripts/snli_ve/train.sh --bf16-autocast --add-premise
. "$(dirname "$0")/../train_common.sh"
train_task --task snli_ve --data dataset/demo/snli_ve_train.tsv,dataset/demo/snli_ve_valid.tsv \
    --updates 600 --lr 1e-3 --best-metric accuracy --max-output-tokens 4 -- "$@"

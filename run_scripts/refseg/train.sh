#!/bin/sh
# Referring segmentation (refseg): text + image -> polygon tokens of the mask. Defaults train
# unify_tiny on the demo data (run_scripts/train_common.sh lists the settings the environment
# overrides); extra arguments go to fairseq. RefCOCO masks on the generic layout with unify_base,
# for example:
#   DATA=refseg_train.tsv,refseg_val.tsv VOCAB=vocab ARCH=unify_base PATCH=512 BATCH=16 LR=5e-5 \
#   MAX_UPDATE=50000 sh run_scripts/refseg/train.sh --update-freq 4 --bf16-autocast --crop-prob 0.5
# Outputs: every part of the mask (--max-tgt-length is sized to the longest target); validation generates up to 200 tokens.
. "$(dirname "$0")/../train_common.sh"
train_task --task refseg --data dataset/demo/refseg_train.tsv,dataset/demo/refseg_valid.tsv \
    --updates 3000 --lr 1e-3 --best-metric mIoU --max-output-tokens 200 -- "$@"

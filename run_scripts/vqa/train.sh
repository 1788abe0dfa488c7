#!/bin/sh
# Visual question answering (vqa): question + image -> one of the candidate answers. Defaults train
# unify_tiny on the demo data (run_scripts/train_common.sh lists the settings the environment
# overrides); extra arguments go to fairseq. Candidates: --answers-file (one answer a line, or a
# .json list / ans2label object), or by default every training row's best answer, which the
# checkpoint keeps. Validation uses constrained beam search; --eval-mode candidates scores every
# answer instead (OFA's "allcand"). VQAv2 with unify_base, for example:
#   DATA=vqa_train.tsv,vqa_val.tsv VOCAB=vocab ARCH=unify_base PATCH=480 BATCH=16 LR=5e-5 \
#   MAX_UPDATE=100000 sh run_scripts/vqa/train.sh --answers-file trainval_answers.txt --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
train_task --task vqa --data dataset/demo/vqa_train.tsv,dataset/demo/vqa_valid.tsv \
    --updates 1000 --lr 1e-3 --best-metric vqa_score --max-output-tokens 8 -- "$@"

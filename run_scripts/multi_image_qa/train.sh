#!/bin/sh
# Questions about several images (multi_image_qa): the vqa task over a JSON list of images, the
# question placing them by <image_k> markers; answers from the candidates (vqa's --answers-file, or
# every training row's best answer). Defaults train unify_tiny on the demo pairs; extra arguments go
# to fairseq.
# From scratch, a few hundred updates learn at most the words' priors; start from the quickstart's model,
# which reads expressions and finds regions (its MULTI_IMAGE=1 stage, 300 updates of the three multi-image
# tasks from it: nlvr 0.64, multi_image_qa 0.41, multi_image_refcoco 0.88); its vocabulary has 100 bins a side:
#   sh run_scripts/multi_image_qa/train.sh --num-bins 100 --layer-positions --position-heads 2 --region-head \
#       --finetune-from-model checkpoints/demo/checkpoint_last.pt
. "$(dirname "$0")/../train_common.sh"
train_task --task multi_image_qa --data dataset/demo/multi_image_qa_train.tsv,dataset/demo/multi_image_qa_valid.tsv \
    --updates 1000 --lr 1e-3 --best-metric vqa_score --max-output-tokens 8 -- "$@"

#!/bin/sh
# Statements about pairs of images (nlvr): images + statement -> true / false, constrained to the two
# labels. The image cell is a JSON list; <image_k> markers in the statement place the images. Defaults
# train unify_tiny on the demo pairs (run_scripts/train_common.sh lists the settings the environment
# overrides); extra arguments go to fairseq.
# From scratch, a few hundred updates learn at most the words' priors; start from the quickstart's model,
# which reads expressions and finds regions (its MULTI_IMAGE=1 stage, 300 updates of the three multi-image
# tasks from it: nlvr 0.64, multi_image_qa 0.41, multi_image_refcoco 0.88); its vocabulary has 100 bins a side:
#   sh run_scripts/nlvr/train.sh --num-bins 100 --layer-positions --position-heads 2 --region-head \
#       --finetune-from-model checkpoints/demo/checkpoint_last.pt
. "$(dirname "$0")/../train_common.sh"
train_task --task nlvr --data dataset/demo/nlvr_train.tsv,dataset/demo/nlvr_valid.tsv \
    --updates 1000 --lr 1e-3 --best-metric accuracy --max-output-tokens 4 -- "$@"

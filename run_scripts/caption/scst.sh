#!/bin/sh
# Caption stage 2: self-critical sequence training (--criterion self_critical, CIDEr-D reward) from a
# cross-entropy checkpoint, with OFA's stage-2 settings (run_scripts/caption/train_caption_stage2.sh) as
# defaults: lr 1e-5 decaying to 2e-7 after 6% of the updates as warm-up, batch 2 x update-freq 4, dropout 0,
# clip-norm 1.0, and beam search of 5 outputs of at most 16 tokens without a repeated trigram, in training
# (SCST_ARGS) and validation alike. DATA's training rows hold an image with all its captions joined by &&
# (as validation rows do). Settings as in run_scripts/train_common.sh, plus CKPT, UPDATE_FREQ and SCST_ARGS.
# COCO with unify_base, for example:
#   CKPT=checkpoints/caption/checkpoint_best.pt DATA=coco_caption_train_images.tsv,coco_caption_valid.tsv \
#   VOCAB=vocab ARCH=unify_base PATCH=384 MAX_UPDATE=5300 sh run_scripts/caption/scst.sh --bf16-autocast
. "$(dirname "$0")/../train_common.sh"
MAX_UPDATE=${MAX_UPDATE:-3000}
LR=${LR:-1e-5} BATCH=${BATCH:-2} WARMUP=${WARMUP:-$((MAX_UPDATE * 6 / 100))} SAVE_DIR=${SAVE_DIR:-checkpoints/caption_scst}
generation=${SCST_ARGS:-'{"beam": 5, "max_len_b": 16, "no_repeat_ngram_size": 3}'}
train_task --task caption --data dataset/demo/caption_train.tsv,dataset/demo/caption_valid.tsv \
    --updates "$MAX_UPDATE" --lr "$LR" --best-metric cider --max-output-tokens 16 -- \
    --criterion self_critical --scst-args "$generation" --eval-args "$generation" \
    --finetune-from-model "${CKPT:-checkpoints/caption/checkpoint_best.pt}" \
    --update-freq "${UPDATE_FREQ:-4}" --end-learning-rate 2e-7 --fixed-validation-seed 7 "$@"

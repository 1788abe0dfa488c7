#!/bin/sh
# Entity recognition: media (+ optional question) -> the name of a catalogue entity, decoding
# constrained to the trie of every name and alias. Defaults train unify_tiny on the demo data and
# its landmark catalogue (run_scripts/train_common.sh lists the settings the environment
# overrides); extra arguments go to fairseq. A 10^6-entity catalogue with unify_base, for example:
#   DATA=entity_train.tsv,entity_val.tsv VOCAB=vocab ARCH=unify_base PATCH=384 BATCH=16 LR=5e-5 \
#   CATALOGUE=wiki_entities.jsonl MAX_UPDATE=100000 sh run_scripts/entity_recognition/train.sh --bf16-autocast
# The validation metric reports seen/unseen accuracy and their harmonic mean when rows say "seen".
. "$(dirname "$0")/../train_common.sh"
train_task --task entity_recognition --data dataset/demo/entity_train.tsv,dataset/demo/entity_valid.tsv \
    --updates 1000 --lr 1e-3 --best-metric accuracy --max-output-tokens 24 -- \
    --catalogue "${CATALOGUE:-dataset/demo/entities.tsv}" "$@"

#!/bin/sh
# srun starts this once per task: Slurm's task numbers become the torchrun environment that
# train.py and evaluate.py read (rendezvous.sh exports MASTER_ADDR and MASTER_PORT), then the command runs.
export RANK="$SLURM_PROCID" LOCAL_RANK="$SLURM_LOCALID" WORLD_SIZE="$SLURM_NTASKS"
exec "$@"

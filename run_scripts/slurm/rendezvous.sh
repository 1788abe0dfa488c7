# Sourced by the batch scripts: the first node of the job and a port there, where rank_env.sh's
# ranks meet (torchrun's MASTER_ADDR and MASTER_PORT; MASTER_PORT from the environment wins).
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
export MASTER_ADDR MASTER_PORT

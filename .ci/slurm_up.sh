#!/bin/sh
# A single-node Slurm on loopback for the `slurm` tests: munged, slurmctld and slurmd, run as root
# from their own folder, this host the one node. Installs Debian's packages when they are missing.
#   sh .ci/slurm_up.sh                      prints the export line for SLURM_CONF
#   sh .ci/slurm_down.sh                    stops the daemons it started, by the PIDs it recorded
# Settings: UNIGROUND_SLURM_DIR (default /tmp/uniground-slurm) holds the config, state, logs, PIDs.
set -eu
DIR=${UNIGROUND_SLURM_DIR:-/tmp/uniground-slurm}
NODE=$(hostname -s)

if [ "$(id -u)" != 0 ]; then
    echo "slurm_up.sh: run as root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi
if [ -e "$DIR/slurmctld.pid" ]; then
    echo "slurm_up.sh: $DIR/slurmctld.pid exists; run .ci/slurm_down.sh first" >&2
    exit 1
fi

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge" /run/munge
chmod 755 "$DIR"  # munged runs as munge and keeps its files in $DIR/munge
chown munge:munge "$DIR/munge" /run/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
cat > "$DIR/slurm.conf" <<EOF
ClusterName=uniground
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

tries=0
until [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" = idle ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 60 ]; then
        echo "slurm_up.sh: node $NODE not idle after 30 s; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "export SLURM_CONF=$SLURM_CONF"

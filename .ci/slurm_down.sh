#!/bin/sh
# Stops the daemons .ci/slurm_up.sh started, by the PIDs it recorded, and waits for them to exit.
# Settings: UNIGROUND_SLURM_DIR, as for slurm_up.sh.
set -u
DIR=${UNIGROUND_SLURM_DIR:-/tmp/uniground-slurm}

# stop NAME PIDFILE: only a live process of that name, so a stale PID file never hits another process
stop() {
    [ -s "$2" ] || return 0
    pid=$(cat "$2")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
        kill "$pid"
        tries=0
        while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 50 ]; do
            tries=$((tries + 1))
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid"
        fi
    fi
    rm -f "$2"
}

stop slurmd "$DIR/slurmd.pid"
stop slurmctld "$DIR/slurmctld.pid"
stop munged "$DIR/munge/munged.pid"

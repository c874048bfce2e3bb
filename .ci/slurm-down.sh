#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by .ci/slurm-up.sh. Best effort; always exits 0.
set -uo pipefail

log() { printf '[slurm-down] %s\n' "$*"; }

for d in slurmd slurmctld munged; do
    if pgrep -x "$d" >/dev/null 2>&1; then
        log "stopping $d"
        pkill -TERM -x "$d" 2>/dev/null || true
        for _ in $(seq 1 20); do pgrep -x "$d" >/dev/null 2>&1 || break; sleep 0.5; done
        if pgrep -x "$d" >/dev/null 2>&1; then
            log "$d did not exit; sending SIGKILL"
            pkill -KILL -x "$d" 2>/dev/null || true
        fi
    else
        log "$d not running"
    fi
done
# leftover job step daemons
pkill -KILL -x slurmstepd 2>/dev/null || true
rm -f /run/slurm/slurmctld.pid /run/slurm/slurmd.pid /run/munge/munged.pid 2>/dev/null || true
log "done"
exit 0

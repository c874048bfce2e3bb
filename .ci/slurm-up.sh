#!/usr/bin/env bash
# Start a real one-node SLURM cluster (slurmctld + slurmd + munge) on this
# machine, without systemd, so CI can run Snakemake through
# snakemake-executor-plugin-slurm.
#
# Target: Debian 12 (slurm 22.05), run as root. Idempotent: re-running keeps a
# healthy cluster running (restarting daemons only if the config changed).
#
# Layout:   config   /etc/slurm/slurm.conf   (SLURM's compiled-in default;
#                    the plugin's job steps drop SLURM_CONF, so it must be here)
#           state    /var/spool/slurmctld, /var/spool/slurmd
#           logs     /var/log/slurm/{slurmctld,slurmd}.log, /var/log/munge/munged.log
#
# Env knobs: SLURM_UP_TIMEOUT (default 60 s), SLURM_UP_SKIP_APT=1, SLURM_UP_SKIP_SMOKE=1
set -euo pipefail

TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
PARTITION=debug
SLURM_ETC=/etc/slurm
SLURM_CONF_FILE="$SLURM_ETC/slurm.conf"
LOGDIR=/var/log/slurm

log()  { printf '[slurm-up] %s\n' "$*"; }
die()  { printf '[slurm-up] ERROR: %s\n' "$*" >&2; exit 1; }
dump_logs() {
    for f in /var/log/munge/munged.log "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log"; do
        [[ -f $f ]] && { echo "----- tail $f" >&2; tail -n 30 "$f" >&2; }
    done
    return 0
}
trap 'rc=$?; if (( rc != 0 )); then echo "[slurm-up] FAILED (exit $rc)" >&2; dump_logs; fi' EXIT

[[ $(id -u) -eq 0 ]] || die "must run as root"

# SLURM_CONF from the environment would make the client tools read another file.
unset SLURM_CONF

# ---------------------------------------------------------------- packages
PKGS=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} )) && [[ ${SLURM_UP_SKIP_APT:-0} != 1 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting services (systemd or
    # sysv) themselves: we start the daemons by hand below.
    added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    log "apt-get update"
    apt-get update -qq || die "apt-get update failed"
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null \
        || { (( added_policy )) && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
    (( added_policy )) && rm -f /usr/sbin/policy-rc.d
else
    log "packages already installed: ${PKGS[*]}"
fi
for b in munged munge unmunge slurmctld slurmd sinfo srun sbatch squeue scontrol; do
    command -v "$b" >/dev/null || die "binary '$b' not found after install"
done
log "slurm package version: $(dpkg-query -W -f='${Version}' slurmctld)"

# ------------------------------------------------------------------ munge
if pgrep -x munged >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running and working"
else
    pkill -x munged 2>/dev/null || true
    install -d -o munge -g munge -m 0700 /etc/munge
    install -d -o munge -g munge -m 0700 /var/log/munge
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    rm -f /run/munge/munged.pid
    log "starting munged"
    if command -v runuser >/dev/null && runuser -u munge -- true 2>/dev/null; then
        runuser -u munge -- munged || die "munged failed to start (as user munge)"
    else
        munged --force || die "munged failed to start (as root)"
    fi
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
fi
munge -n | unmunge >/dev/null || die "munge -n | unmunge does not work"
log "munge OK"

# ------------------------------------------------------------ slurm.conf
HOST=$(hostname -s)
[[ -n $HOST ]] || die "hostname -s is empty"
# Make sure the short hostname resolves (slurmctld/slurmd look it up).
if ! getent hosts "$HOST" >/dev/null; then
    log "adding '$HOST' to /etc/hosts"
    echo "127.0.0.1 $HOST" >> /etc/hosts
fi

# Hardware as slurmd sees it, e.g.
# NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24036
HW=$(slurmd -C | head -n1) || die "slurmd -C failed"
get() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=$(get CPUs); BOARDS=$(get Boards); SPB=$(get SocketsPerBoard)
CPS=$(get CoresPerSocket); TPC=$(get ThreadsPerCore); MEM=$(get RealMemory)
[[ -n $CPUS && -n $MEM ]] || die "could not parse 'slurmd -C' output: $HW"
# Leave some headroom so the node is not drained for "low RealMemory".
MEM=$(( MEM * 95 / 100 ))
log "node $HOST: CPUs=$CPUS RealMemory=$MEM (from: $HW)"

install -d -m 0755 "$SLURM_ETC" "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd /run/slurm

NEW_CONF=$(cat <<EOF
# Generated by .ci/slurm-up.sh: single-node CI cluster, no cgroups, no accounting database.
# Memory is enforced without cgroups (not available in a container): slurmstepd samples the
# RSS of each job step every second and kills a step above its --mem (OverMemoryKill).
ClusterName=ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Boards=${BOARDS:-1} SocketsPerBoard=${SPB:-1} CoresPerSocket=${CPS:-$CPUS} ThreadsPerCore=${TPC:-1} RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
conf_changed=0
if [[ ! -f $SLURM_CONF_FILE ]] || [[ "$(cat "$SLURM_CONF_FILE")" != "$NEW_CONF" ]]; then
    log "writing $SLURM_CONF_FILE"
    printf '%s\n' "$NEW_CONF" > "$SLURM_CONF_FILE"
    chmod 0644 "$SLURM_CONF_FILE"
    conf_changed=1
else
    log "$SLURM_CONF_FILE unchanged"
fi

# ---------------------------------------------------------------- daemons
start_daemon() {  # name
    local d=$1
    if pgrep -x "$d" >/dev/null; then
        if (( conf_changed )); then
            log "config changed: restarting $d"
            pkill -x "$d" || true
            for _ in $(seq 1 20); do pgrep -x "$d" >/dev/null || break; sleep 0.5; done
        else
            log "$d already running"
            return 0
        fi
    fi
    log "starting $d"
    "$d" || die "$d failed to start (see $LOGDIR/$d.log)"
}
start_daemon slurmctld
# give the controller a moment to listen before slurmd registers
for _ in $(seq 1 20); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.5; done
scontrol ping | grep -q 'is UP' || die "slurmctld is not responding (scontrol ping)"
start_daemon slurmd

log "waiting (up to ${TIMEOUT}s) for node $HOST to be idle"
deadline=$(( SECONDS + TIMEOUT ))
state=""
while (( SECONDS < deadline )); do
    state=$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1 || true)
    case $state in
        idle|mixed|allocated) break ;;
        down*|drain*|drained*|fail*)
            log "node state '$state': resuming"
            scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
case $state in
    idle|mixed|allocated) log "node $HOST is $state" ;;
    *) sinfo -N -l >&2 || true; scontrol show node "$HOST" >&2 || true
       die "node $HOST did not become idle within ${TIMEOUT}s (state: '${state:-unknown}')" ;;
esac
sinfo

# ------------------------------------------------------------- smoke test
if [[ ${SLURM_UP_SKIP_SMOKE:-0} != 1 ]]; then
    log "smoke test: srun -N1 -n1 hostname"
    out=$(timeout 60 srun -N1 -n1 hostname) || die "srun failed"
    [[ $out == "$HOST"* ]] || die "srun printed '$out', expected '$HOST'"
    log "srun OK ($out)"

    smoke=/tmp/slurm-smoke.out
    rm -f "$smoke"
    jid=$(sbatch --parsable --wrap 'echo ok' -o "$smoke") || die "sbatch failed"
    jid=${jid%%;*}
    log "sbatch submitted job $jid; waiting"
    deadline=$(( SECONDS + TIMEOUT ))
    while (( SECONDS < deadline )); do
        [[ -z $(squeue -h -j "$jid" 2>/dev/null) ]] && break
        sleep 1
    done
    [[ -z $(squeue -h -j "$jid" 2>/dev/null) ]] || die "job $jid still queued/running after ${TIMEOUT}s"
    for _ in $(seq 1 10); do [[ -s $smoke ]] && break; sleep 0.5; done
    [[ $(cat "$smoke" 2>/dev/null) == ok ]] || die "sbatch output $smoke is '$(cat "$smoke" 2>/dev/null)', expected 'ok'"
    log "sbatch OK"
fi

log "SLURM cluster is up: partition '$PARTITION', node '$HOST' ($CPUS CPUs, ${MEM} MB)"

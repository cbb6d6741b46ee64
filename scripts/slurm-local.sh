#!/usr/bin/env bash
# A private single-node Slurm cluster, for the tests and for trying the slurm profile on one
# machine. Everything it uses lives in one folder of its own (DIR): its slurm.conf, state,
# spool, logs, PID files, and its own munge daemon with its own key and socket. It listens on
# free ports of its own (not 6817/6818), writes nothing under /etc, /run or /var, and stops
# only the daemons it started (by the PIDs it recorded). A system Slurm or munge on the same
# machine is left alone; the private cluster runs beside it.
#
#   scripts/slurm-local.sh start [DIR]   # prints the lines to eval: export SLURM_CONF=...,
#                                        # export PATH=DIR/bin:$PATH, export RS3L_SLURM_PARTITION=...
#   scripts/slurm-local.sh stop [DIR]    # cancels its jobs, stops its daemons; nothing started -> no-op
#   scripts/slurm-local.sh status [DIR]  # exit 0 when it is up (prints the same lines as start)
#
#   eval "$(bash scripts/slurm-local.sh start)"   # then sbatch/squeue/snakemake reach it
#
# DIR defaults to $RS3L_SLURM_DIR, else .slurm-local/ in the repository (git-ignored).
# RS3L_SLURM_CPUS=<n> makes the node offer n CPUs even where the machine has fewer (to run the
# slurm profile's resource requests unchanged on a small machine; Slurm then oversubscribes).
# RS3L_SLURM_CRED_EXPIRE=<s> sets the job credential lifetime (Slurm's default 120 s), which is also
# how long a requeued job waits before it starts again (the fault tests use a few seconds).
# Needs root (slurmd launches the jobs) and the Debian packages
#   slurmctld slurmd slurm-client munge
# (scripts/setup.sh --with-slurm installs them without starting or enabling their services).
# Exit status: 0 done, 1 error, 3 refused: cannot run here (the message says why; tests skip).
set -euo pipefail
action=${1:-start}
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${2:-${RS3L_SLURM_DIR:-$repo/.slurm-local}}
marker=.rs3l-slurm-local
partition=rs3l
node=$(hostname -s)  # a resolvable name: DDP (Lightning) uses the node list as its master address

say() { echo "slurm-local: $*" >&2; }
refuse() { say "refused: $*"; exit 3; }

[[ $dir == /* ]] || dir=$(pwd)/$dir
dir=${dir%/}
conf=$dir/slurm.conf
msock=$dir/munge/munge.socket

# The PID in pid file $1 if that process is alive, is named $2 and was started with this
# cluster's folder on its command line (so a reused PID is never taken for ours).
our_pid() {
    local pidfile=$1 name=$2 pid
    [[ -s $pidfile ]] || return 1
    pid=$(tr -dc 0-9 < "$pidfile")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
    echo "$pid"
}

# Stop one process by PID: TERM, then KILL after a grace period.
stop_pid() {
    local pid=$1 name=$2
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { say "stopped $name (pid $pid)"; return 0; }
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    say "killed $name (pid $pid): it did not stop within 10 s"
}

# slurmstepd processes of this cluster: they carry its SLURM_CONF in their environment.
our_stepds() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(cat 2>/dev/null < "$p/comm") == slurmstepd ]] || continue
        tr '\0' '\n' 2>/dev/null < "$p/environ" | grep -qxF "SLURM_CONF=$conf" && echo "${p#/proc/}"
    done
    return 0
}

print_env() {
    echo "export SLURM_CONF=$conf"
    echo "export PATH=$dir/bin:\$PATH"
    echo "export RS3L_SLURM_PARTITION=$partition"
}

is_up() {
    our_pid "$dir/run/slurmctld.pid" slurmctld >/dev/null && our_pid "$dir/run/slurmd.pid" slurmd >/dev/null \
        && our_pid "$dir/munge/munged.pid" munged >/dev/null
}

stop() {
    if [[ ! -e $dir/$marker ]]; then
        say "nothing to stop in $dir"
        return 0
    fi
    local pid
    export SLURM_CONF=$conf
    if our_pid "$dir/run/slurmctld.pid" slurmctld >/dev/null; then
        # cancel this cluster's jobs and let slurmd clean up their steps before it stops
        local jobs
        jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            say "cancelling jobs: $(echo $jobs)"
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 1 60); do
                [[ -z $(timeout 5 squeue -h -t running,completing -o %A 2>/dev/null || true) ]] && break
                sleep 0.5
            done
        fi
    fi
    for _ in $(seq 1 20); do
        [[ -z $(our_stepds) ]] && break
        sleep 0.5
    done
    local stopped=0
    if pid=$(our_pid "$dir/run/slurmd.pid" slurmd); then stop_pid "$pid" slurmd; stopped=1; fi
    for pid in $(our_stepds); do stop_pid "$pid" slurmstepd; stopped=1; done
    if pid=$(our_pid "$dir/run/slurmctld.pid" slurmctld); then stop_pid "$pid" slurmctld; stopped=1; fi
    if pid=$(our_pid "$dir/munge/munged.pid" munged); then stop_pid "$pid" munged; stopped=1; fi
    [[ $stopped == 1 ]] || say "nothing running in $dir"
    rm -f "$dir/run/slurmctld.pid" "$dir/run/slurmd.pid" "$dir/munge/munged.pid"
}

case $action in
    stop) stop; exit 0 ;;
    status|env)
        if [[ -e $dir/$marker ]] && is_up; then print_env; exit 0; fi
        say "not running in $dir"; exit 1 ;;
    start) ;;
    *) say "usage: $0 start|stop|status [DIR]"; exit 1 ;;
esac

for bin in slurmctld slurmd sbatch squeue scancel sinfo scontrol munged munge unmunge; do
    command -v "$bin" >/dev/null \
        || { say "'$bin' not found; install the Debian packages: bash scripts/setup.sh --with-slurm (apt-get install slurmctld slurmd slurm-client munge)"; exit 1; }
done
[[ $(id -u) == 0 ]] \
    || refuse "slurmd must run as root to launch jobs; run this as root (or use the slurm profile on a real cluster)"
# a unix socket path has at most 107 bytes
(( ${#msock} <= 100 )) || refuse "the folder $dir is too deep for munge's socket path; give a shorter one (RS3L_SLURM_DIR=/tmp/rs3l-slurm)"
if [[ -e $dir && ! -e $dir/$marker && -n $(ls -A "$dir" 2>/dev/null) ]]; then
    refuse "$dir exists and is not a slurm-local folder; give an empty or new folder (argument or RS3L_SLURM_DIR)"
fi
if [[ -e $dir/$marker ]] && is_up; then
    say "already running in $dir"
    print_env
    exit 0
fi

# A system Slurm/munge is no obstacle: this cluster has its own config, ports and munge socket.
sys_pids=$(for n in slurmctld slurmd munged; do pgrep -x "$n" || true; done | tr '\n' ' ')
sys_pids=${sys_pids% }
[[ -z $sys_pids ]] || say "other Slurm/munge processes run on this machine (pids $sys_pids); leaving them alone"

stop >/dev/null 2>&1 || true  # leftovers of an earlier start in this folder (by their recorded PIDs)
mkdir -p "$dir"
chmod 700 "$dir"
touch "$dir/$marker"
rm -rf "$dir/state" "$dir/run" "$dir/log" "$dir/bin"
mkdir -p "$dir/state/ctld" "$dir/state/d" "$dir/run" "$dir/log" "$dir/munge"
chmod 700 "$dir/munge"
if [[ ! -s $dir/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of="$dir/munge/munge.key" 2>/dev/null
fi
chmod 400 "$dir/munge/munge.key"

# two free TCP ports outside the ephemeral range (and not Slurm's 6817/6818)
read -r ctld_port d_port < <(python3 - <<'PY'
import random, socket
ports = []
while len(ports) < 2:
    p = random.randint(20000, 31999)
    if p in ports:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    ports.append(p)
print(*ports)
PY
)

cpus=${RS3L_SLURM_CPUS:-$(nproc)}
[[ $cpus =~ ^[1-9][0-9]*$ ]] || { say "RS3L_SLURM_CPUS must be a positive number"; exit 1; }
cred_expire=${RS3L_SLURM_CRED_EXPIRE:-120}
[[ $cred_expire =~ ^[1-9][0-9]*$ ]] || { say "RS3L_SLURM_CRED_EXPIRE must be a positive number of seconds"; exit 1; }
overrides=""
(( cpus <= $(nproc) )) || overrides="SlurmdParameters=config_overrides"
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
host=$(hostname -s)
: > "$dir/plugstack.conf"
cat > "$conf" <<CONF
# private single-node cluster of scripts/slurm-local.sh; everything lives in $dir
ClusterName=rs3l-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$msock,cred_expire=$cred_expire
CredType=cred/munge
StateSaveLocation=$dir/state/ctld
SlurmdSpoolDir=$dir/state/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
$overrides
NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$partition Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

# Client commands find this cluster through SLURM_CONF. Some tools drop every SLURM_* variable
# before they call srun (snakemake-executor-plugin-slurm-jobstep 0.6.1 does, inside each job), so
# DIR/bin (on PATH through the printed exports) has wrappers that fall back to this cluster's config.
mkdir -p "$dir/bin"
for cmd in srun sbatch salloc squeue scancel sinfo scontrol sacct; do
    real=$(command -v "$cmd" || true)
    [[ -n $real && $real != "$dir/bin/$cmd" ]] || continue
    printf '#!/bin/sh\n# slurm-local.sh: %s of the private cluster in %s\nexport SLURM_CONF="${SLURM_CONF:-%s}"\nexec %s "$@"\n' \
        "$cmd" "$dir" "$conf" "$real" > "$dir/bin/$cmd"
    chmod 755 "$dir/bin/$cmd"
done

export SLURM_CONF=$conf
started=0
trap '[[ $started == 1 ]] || { say "start failed; stopping what it started"; stop >/dev/null 2>&1 || true; }' EXIT

# munged refuses sockets under folders that not everybody may traverse; this one is private to
# root on purpose (all jobs run as root), so --force.
munged --force --socket="$msock" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" \
    || { say "munged did not start; see $dir/log/munged.log"; exit 1; }
munge -S "$msock" -n </dev/null | unmunge -S "$msock" >/dev/null \
    || { say "munge does not work; see $dir/log/munged.log"; exit 1; }
slurmctld -c -f "$conf" || { say "slurmctld did not start; see $dir/log/slurmctld.log"; exit 1; }
slurmd -f "$conf" -N "$node" || { say "slurmd did not start; see $dir/log/slurmd.log"; exit 1; }
for _ in $(seq 1 60); do
    if sinfo -h -n "$node" -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        started=1
        say "up in $dir: node $node, partition $partition, slurmctld port $ctld_port, slurmd port $d_port;" \
            "stop with: bash scripts/slurm-local.sh stop $dir"
        print_env
        exit 0
    fi
    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
    sleep 0.5
done
say "the node did not become idle; see $dir/log/*.log"
sinfo >&2 || true
exit 1

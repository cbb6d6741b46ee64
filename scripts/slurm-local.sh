#!/usr/bin/env bash
# Start (or stop) a single-node Slurm cluster on this machine, for the tests and for trying
# the slurm profile on a laptop. Needs root and the Debian packages
#   slurmctld slurmd slurm-client munge
# (scripts/setup.sh --with-slurm installs them).
#   scripts/slurm-local.sh start   # prints the partition name
#   scripts/slurm-local.sh stop
set -euo pipefail
action=${1:-start}
conf_dir=/etc/slurm
state=/var/spool/rs3l-slurm
node=$(hostname -s)

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
}

if [[ $action == stop ]]; then stop; exit 0; fi

for bin in slurmctld slurmd sbatch munged; do
    command -v "$bin" >/dev/null || { echo "slurm-local: '$bin' not found; apt-get install slurmctld slurmd slurm-client munge" >&2; exit 1; }
done

cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$conf_dir" "$state/ctld" "$state/d" /var/log/slurm /run/munge
cat > "$conf_dir/slurm.conf" <<CONF
ClusterName=rs3l
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
rm -f "$conf_dir/cgroup.conf"  # slurm 22.05 has no 'disabled' cgroup plugin; none is needed here

# munge: one key per machine
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged" 2>/dev/null || munged --force

stop
sleep 1
slurmctld -c 2>/dev/null || slurmctld
slurmd 2>/dev/null || slurmd
for _ in $(seq 1 30); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo debug
        exit 0
    fi
    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm-local: the node did not become idle; see /var/log/slurm/*.log" >&2
sinfo >&2 || true
exit 1

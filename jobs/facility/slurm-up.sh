#!/usr/bin/env bash
# Configure and start a single-node Slurm (munge + slurmctld + slurmd, no systemd) in a scratch
# folder, for trying svjscout's `executor.slurm` on one machine (the facility tests do this).
#
#   jobs/facility/slurm-up.sh [SCRATCH]     (default /tmp/svjscout-slurm; needs root)
#   export SLURM_CONF=SCRATCH/slurm.conf    (what sbatch/squeue/scancel, and so dask-jobqueue, read)
#   jobs/facility/slurm-down.sh [SCRATCH]
#
# Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge). Everything the daemons
# write (state, spool, logs, pid files, the munge socket and key) stays under SCRATCH; nothing
# in /etc is changed. Ports: SVJ_SLURMCTLD_PORT / SVJ_SLURMD_PORT (default: free ones). The
# node is this host (`hostname -s`) at 127.0.0.1 with `nproc` CPUs and the memory in /proc/meminfo.
# Exit status: 0 once `sinfo` shows the node idle, 1 otherwise (the daemons' logs are printed).
set -euo pipefail
S=$(realpath -m "${1:-/tmp/svjscout-slurm}")
for exe in munged slurmctld slurmd sinfo; do
  command -v "$exe" >/dev/null || { echo "slurm-up: $exe not found (apt-get install slurm-wlm munge)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "slurm-up: run as root (SlurmUser/SlurmdUser are root)" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CTLD_PORT=${SVJ_SLURMCTLD_PORT:-$(free_port)}
SLURMD_PORT=${SVJ_SLURMD_PORT:-$(free_port)}
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p "$S"/{state,spool,log,run}
chmod 0755 "$S"   # the munge user reaches its files in SCRATCH/munge
# munge: its own key, socket and files in SCRATCH/munge, run as the munge user
install -d -m 0755 -o munge -g munge "$S/munge"
if [ ! -s "$S/munge/munge.key" ]; then
  if [ -s /etc/munge/munge.key ]; then cp /etc/munge/munge.key "$S/munge/munge.key"
  else dd if=/dev/urandom bs=1 count=1024 of="$S/munge/munge.key" status=none; fi
fi
chown munge:munge "$S/munge/munge.key"; chmod 0400 "$S/munge/munge.key"
SOCK="$S/munge/munge.socket"
runuser -u munge -- munged --socket="$SOCK" --key-file="$S/munge/munge.key" --pid-file="$S/munge/munged.pid" \
  --log-file="$S/munge/munged.log" --seed-file="$S/munge/munged.seed"
cat > "$S/slurm.conf" <<CONF
# written by svjscout jobs/facility/slurm-up.sh
ClusterName=svjscout
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=30
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
# Debian's slurm reads cgroup.conf only for cgroup plugins; none is used here
export SLURM_CONF="$S/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
    echo "slurm-up: node $NODE idle ($CPUS CPUs); export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 1
done
echo "slurm-up: the node did not come up; logs follow" >&2
sinfo >&2 || true
tail -n 30 "$S/log/slurmctld.log" "$S/log/slurmd.log" "$S/munge/munged.log" >&2 || true
exit 1

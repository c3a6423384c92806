#!/usr/bin/env bash
# Stop what jobs/facility/slurm-up.sh started (slurmd, slurmctld, munged), by their pid files.
#   jobs/facility/slurm-down.sh [SCRATCH]    (default /tmp/svjscout-slurm)
set -uo pipefail
S=$(realpath -m "${1:-/tmp/svjscout-slurm}")
stop() {  # pid file, name
  [ -s "$1" ] || return 0
  local pid; pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$1"
  echo "slurm-down: stopped $2 ($pid)"
}
if [ -f "$S/slurm.conf" ] && command -v scancel >/dev/null; then
  SLURM_CONF="$S/slurm.conf" scancel --user=root 2>/dev/null || true
fi
stop "$S/run/slurmd.pid" slurmd
stop "$S/run/slurmctld.pid" slurmctld
stop "$S/munge/munged.pid" munged
exit 0

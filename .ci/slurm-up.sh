#!/usr/bin/env bash
# A real one-node SLURM on this machine, for the slurm-marked tests and benchmarks.
#
#   sudo .ci/slurm-up.sh          # install (Debian/Ubuntu), configure, start, wait for idle
#   sudo .ci/slurm-up.sh --down   # stop the daemons again
#
# Debian's slurm-wlm 22.05 + munge, run as root: process tracking without cgroups
# (proctrack/linuxproc, task/none), no accounting database (so no sacct: jobs are read back
# with scontrol/squeue and kept for MinJobAge seconds after they end), memory limits
# enforced by the job-accounting sampler (jobacct_gather/linux + OverMemoryKill).
# Two partitions on the one node: "debug" (default, every CPU) and "one" (one CPU at a
# time), so benchmarks can compare 1 and 2 CPUs in one run.
# It overwrites /etc/slurm/slurm.conf: meant for CI and a developer's own machine, not a
# real cluster.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm

down() {
  for d in slurmd slurmctld; do
    if pid=$(pgrep -x "$d"); then kill $pid || true; fi
  done
}

if [ "${1:-}" = "--down" ]; then down; exit 0; fi

if [ "$(id -u)" != 0 ]; then echo "slurm-up: must run as root" >&2; exit 1; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

HOST=$(hostname -s)
# CPUs and memory as slurmd sees this machine; keep 512 MB for the system.
read -r CPUS MEM < <(slurmd -C | awk '{for(i=1;i<=NF;i++){split($i,a,"=");
  if(a[1]=="CPUs")c=a[2]; if(a[1]=="RealMemory")m=a[2]}} END{print c, m}')
MEM=$(( MEM > 1024 ? MEM - 512 : MEM ))

mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS"
cat >"$CONF" <<EOF
# Written by .ci/slurm-up.sh for a one-node test cluster on $HOST.
ClusterName=sails-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=one Nodes=$HOST MaxCPUsPerNode=1 MaxTime=INFINITE State=UP
EOF

# munge: the key comes with the package; the daemon may already run.
if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  if command -v runuser >/dev/null; then runuser -u munge -- munged; else munged --force; fi
fi

down
sleep 1
slurmctld
slurmd

for _ in $(seq 60); do
  state=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated) echo "slurm-up: node $HOST $state ($CPUS CPUs, $MEM MB)"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm-up: node $HOST did not become idle (sinfo: ${state:-no answer}); see $LOGS" >&2
exit 1

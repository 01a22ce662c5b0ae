#!/usr/bin/env bash
# A real one-node SLURM (slurmctld + slurmd + munge) on this machine, for tests, CI and trying
# asrd out. Runs as root without systemd or cgroups (Debian's slurm-wlm 22.05).
#
#   slurm_local.sh start     install if missing, configure, start (idempotent: a running cluster is kept)
#   slurm_local.sh stop      cancel its jobs, stop only the daemons it started (by their PID files)
#   slurm_local.sh status    daemons, node state, queue
#   slurm_local.sh env       print `export SLURM_CONF=...` for clients
#
# Settings (environment):
#   ASRD_SLURM_DIR        config, state, spool, logs, PID files   [/tmp/asrd-slurm]
#   ASRD_SLURM_MAX_ARRAY  MaxArraySize (kept small so that asrd's array splitting is exercised) [1001]
#   ASRD_SLURM_KILL_WAIT  seconds between SIGTERM and SIGKILL on cancel/requeue/time limit [10]
#   ASRD_SLURM_CRED_EXPIRE  seconds a requeued job waits before it may start again (SLURM: 120) [10]
#   ASRD_SLURM_PORT       slurmctld port; slurmd takes the next one [6817]
# Clients find the config through SLURM_CONF=$ASRD_SLURM_DIR/slurm.conf; when /etc/slurm/slurm.conf
# does not exist it is also linked there (and unlinked on stop), so plain `sinfo` works too.
set -euo pipefail

dir=${ASRD_SLURM_DIR:-/tmp/asrd-slurm}
max_array=${ASRD_SLURM_MAX_ARRAY:-1001}
kill_wait=${ASRD_SLURM_KILL_WAIT:-10}
cred_expire=${ASRD_SLURM_CRED_EXPIRE:-10}
port=${ASRD_SLURM_PORT:-6817}
conf=$dir/slurm.conf
etc_conf=/etc/slurm/slurm.conf
host=$(hostname -s)
export SLURM_CONF=$conf

log() { echo "slurm_local: $*" >&2; }
die() { log "$*"; exit 1; }

# The PID in $dir/run/NAME.pid, if that process is alive and still is NAME (a stale PID file
# whose number was reused by another process must not get that process stopped).
live_pid() {
  local name=$1 file="$dir/run/$1.pid" pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stop_pid.sh"

install_packages() {
  local missing=() p
  for p in slurm-wlm munge; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (install them as root)"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # a munged already serves
  if [ ! -s /etc/munge/munge.key ]; then
    head -c 1024 /dev/urandom >/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  # Daemons get no inherited descriptors: an open pipe would hold the caller, the lock fd the next start.
  su -s /bin/sh munge -c "munged --pid-file=/run/munge/munged.pid" </dev/null >/dev/null 2>&1 9>&-
  local i
  for ((i = 0; i < 50; i++)); do
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
      cp /run/munge/munged.pid "$dir/run/munged.pid"  # ours: stop will end it
      return 0
    fi
    sleep 0.1
  done
  die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
  local cpus mem_mb tmp
  cpus=$(nproc)
  mem_mb=$(( $(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 2048 ))
  ((mem_mb > 512)) || mem_mb=512
  tmp=$(mktemp "$dir/.slurm.conf.XXXXXX")
  cat >"$tmp" <<EOF
# Written by hpc/scripts/slurm_local.sh: a one-node cluster without systemd, cgroups or accounting.
# Addresses are loopback: a fresh machine's hostname need not resolve.
ClusterName=asrd-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$cred_expire
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
# Test every pending job every 2 s (SLURM: 60 s), so a requeued task starts once it is eligible
SchedulerParameters=sched_interval=2,bf_interval=5
PreemptType=preempt/none
ReturnToService=2
JobRequeue=1
MaxArraySize=$max_array
MaxJobCount=20000
KillWait=$kill_wait
SlurmdParameters=config_overrides
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if cmp -s "$tmp" "$conf"; then rm -f "$tmp"; return 1; fi
  mv "$tmp" "$conf"
  return 0
}

link_etc_conf() {
  if [ ! -e "$etc_conf" ] && [ ! -L "$etc_conf" ]; then
    mkdir -p "$(dirname "$etc_conf")"
    ln -s "$conf" "$etc_conf"
  fi
}

unlink_etc_conf() {
  if [ -L "$etc_conf" ] && [ "$(readlink "$etc_conf")" = "$conf" ]; then rm -f "$etc_conf"; fi
}

node_state() { sinfo -h -n "$host" -o %t 2>/dev/null | head -n1; }

wait_node_up() {
  local i state=""
  for ((i = 0; i < 300; i++)); do
    state=$(node_state || true)
    case "$state" in
      idle* | mix* | alloc* | comp*) return 0 ;;
      down* | drain* | drng* | fail*)
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "node $host not up after 60s (state '$state'); see $dir/log/"
}

cmd_start() {
  install_packages
  mkdir -p "$dir"/{state,spool,run,log}
  exec 9>"$dir/lock"
  flock 9  # two starters (or a start racing a stop) take turns
  start_munge
  local changed=0
  write_conf && changed=1
  link_etc_conf
  local name pid
  if ((changed)); then  # some keys (AuthInfo, ports) need a restart; jobs survive it
    for name in slurmd slurmctld; do
      if pid=$(live_pid "$name"); then
        log "config changed: restarting $name"
        stop_pid "$pid" 20
      fi
    done
  fi
  if ! live_pid slurmctld >/dev/null; then
    slurmctld -f "$conf" </dev/null >/dev/null 2>&1 9>&- || die "slurmctld failed: $dir/log/slurmctld.log"
  fi
  if ! live_pid slurmd >/dev/null; then
    slurmd -f "$conf" </dev/null >/dev/null 2>&1 9>&- || die "slurmd failed: $dir/log/slurmd.log"
  fi
  wait_node_up
  log "up: node $host $(node_state), MaxArraySize=$max_array, SLURM_CONF=$conf"
}

cmd_stop() {
  [ -d "$dir" ] || { log "nothing to stop ($dir does not exist)"; return 0; }
  exec 9>"$dir/lock"
  flock 9
  local pid i name
  if live_pid slurmctld >/dev/null && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    scancel --full --quiet --partition=debug 2>/dev/null || true
    for ((i = 0; i < (kill_wait + 10) * 5; i++)); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  for name in slurmd slurmctld munged; do
    if pid=$(live_pid "$name"); then
      stop_pid "$pid" 20
      log "stopped $name (PID $pid)"
    fi
    if [ "$name" = munged ]; then rm -f "$dir/run/munged.pid"; fi
  done
  unlink_etc_conf
}

cmd_status() {
  local name pid rc=0
  for name in slurmctld slurmd munged; do
    if pid=$(live_pid "$name"); then echo "$name: running (PID $pid)"
    elif [ "$name" = munged ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
      echo "munged: running (not started by this script)"
    else echo "$name: stopped"; rc=1
    fi
  done
  if ((rc == 0)); then
    echo "config: $conf"
    sinfo -N -o "%N %t %c %m"
    squeue -o "%i %j %T %M %R" | head -n 20
  fi
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$(printf %q "$conf")" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac

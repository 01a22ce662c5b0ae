#!/usr/bin/env bash
# A private Prometheus server and node_exporter on 127.0.0.1: what a cluster's monitoring does
# with a node's textfile folder and a job's /metrics endpoint, on one machine (tests, a look at
# a run's metrics on a workstation).
#
#   prometheus_local.sh start DIR TEXTFILE_DIR [RULES_FILE] [HOST:PORT ...]
#       node_exporter (textfile collector only) reads TEXTFILE_DIR; Prometheus scrapes it every
#       second (scrape job `node`) and each HOST:PORT (scrape job `task`), evaluates RULES_FILE
#       (`-` or empty: none), and keeps its data in DIR. Prints Prometheus's URL once it is ready.
#   prometheus_local.sh stop DIR      stop the two started from DIR (and only those)
#
# Both listen on loopback only, on free ports.
set -euo pipefail

die() { echo "prometheus_local.sh: $*" >&2; exit 1; }
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stop_pid.sh"
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || usage

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running_pid() {  # $1: the program's name; the pid from its pidfile, if that program is alive
  local pidfile=$dir/$1.pid pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  # A stale pidfile whose pid now belongs to another program must not get that program killed.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$1" || return 1
  echo "$pid"
}

wait_ready() {  # $1: URL that answers 200 once the server is ready, $2: its log
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || die "not ready after 60 s: $1 (log: $2)"
    sleep 0.1
  done
}

do_start() {
  local textfiles=${1:-} rules=${2:-}
  [ -n "$textfiles" ] || usage
  shift 2 || shift $#
  for prog in prometheus prometheus-node-exporter curl; do
    command -v "$prog" >/dev/null || die "$prog missing: apt-get install prometheus prometheus-node-exporter curl"
  done
  mkdir -p "$dir"; dir=$(realpath "$dir"); textfiles=$(realpath "$textfiles")
  if running_pid prometheus >/dev/null; then die "a Prometheus runs from $dir already"; fi
  local node_port prom_port
  node_port=$(free_port)
  prometheus-node-exporter --web.listen-address="127.0.0.1:$node_port" \
    --collector.disable-defaults --collector.textfile \
    --collector.textfile.directory="$textfiles" >"$dir/node-exporter.log" 2>&1 &
  echo $! >"$dir/prometheus-node-exporter.pid"
  wait_ready "http://127.0.0.1:$node_port/metrics" "$dir/node-exporter.log"

  {
    echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
    if [ -n "$rules" ] && [ "$rules" != - ]; then
      echo "rule_files: [\"$(realpath "$rules")\"]"
    fi
    echo "scrape_configs:"
    echo "  - {job_name: node, static_configs: [{targets: [\"127.0.0.1:$node_port\"]}]}"
    if (($#)); then
      printf '  - {job_name: task, static_configs: [{targets: [%s]}]}\n' \
        "$(printf '"%s",' "$@" | sed 's/,$//')"
    fi
  } >"$dir/prometheus.yml"
  prom_port=$(free_port)
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$prom_port" >"$dir/prometheus.log" 2>&1 &
  echo $! >"$dir/prometheus.pid"
  wait_ready "http://127.0.0.1:$prom_port/-/ready" "$dir/prometheus.log"
  echo "http://127.0.0.1:$prom_port"
}

do_stop() {
  local prog pid
  for prog in prometheus prometheus-node-exporter; do
    pid=$(running_pid "$prog") || continue
    stop_pid "$pid" 20
    rm -f "$dir/$prog.pid"
  done
}

case "$cmd" in
  start) shift 2; do_start "$@" ;;
  stop) do_stop ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# A private redis-server on 127.0.0.1 (e.g. JuiceFS metadata for tests on one machine).
#
#   redis_local.sh start DIR [PORT]   start one in DIR (data, log, pidfile); PORT default: a free one.
#                                     Prints its URL, redis://127.0.0.1:PORT, once it answers PING.
#   redis_local.sh stop DIR           stop the one whose pid is in DIR/redis.pid (and only that one)
#   redis_local.sh status DIR         exit 0 when it runs and answers PING
#
# Bound to loopback with protected mode on: nothing off this machine can reach it. A cluster's
# metadata Redis is a real, persistent, replicated service, not this.
set -euo pipefail

die() { echo "redis_local.sh: $*" >&2; exit 1; }
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stop_pid.sh"
usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || usage
pidfile=$dir/redis.pid
portfile=$dir/redis.port

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running_pid() {  # the pid from the pidfile, if that process is alive
  [ -s "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  # A stale pidfile whose pid now belongs to another program must not get that program killed.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server || return 1
  echo "$pid"
}

pings() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

do_start() {
  command -v redis-server >/dev/null || die "redis-server missing: apt-get install redis-server"
  mkdir -p "$dir"; dir=$(realpath "$dir"); pidfile=$dir/redis.pid; portfile=$dir/redis.port
  if running_pid >/dev/null; then
    pings "$(cat "$portfile")" || die "a redis-server runs from $dir but does not answer"
    echo "redis://127.0.0.1:$(cat "$portfile")"; return 0
  fi
  local port=${1:-$(free_port)}
  redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --daemonize yes \
    --dir "$dir" --pidfile "$pidfile" --logfile "$dir/redis.log" \
    --save "" --appendonly no >/dev/null \
    || die "redis-server failed to start (log: $dir/redis.log)"
  echo "$port" >"$portfile"
  local deadline=$((SECONDS + 20))
  until pings "$port"; do
    ((SECONDS < deadline)) || die "redis-server on port $port did not answer (log: $dir/redis.log)"
    sleep 0.1
  done
  echo "redis://127.0.0.1:$port"
}

do_stop() {
  local pid
  if ! pid=$(running_pid); then echo "redis_local.sh: not running ($pidfile)" >&2; return 0; fi
  stop_pid "$pid" 20
  rm -f "$pidfile"
}

do_status() {
  running_pid >/dev/null && pings "$(cat "$portfile")"
}

case "$cmd" in
  start) do_start "${3:-}" ;;
  stop) do_stop ;;
  status) do_status ;;
  *) usage ;;
esac

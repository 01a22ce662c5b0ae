# Sourced by the service scripts: send TERM to one PID and wait (up to $2 s) for it to go; KILL it
# if it does not.
stop_pid() {
  local pid=$1 wait_s=${2:-15} i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "$(basename "$0"): PID $pid did not stop in ${wait_s}s: KILL" >&2
  kill -9 "$pid" 2>/dev/null || true
}

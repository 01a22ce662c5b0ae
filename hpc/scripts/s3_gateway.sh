#!/usr/bin/env bash
# Serve a JuiceFS volume over the S3 API (`juicefs gateway`), for clients that read s3:// URLs.
#
#   s3_gateway.sh start --meta URL --state DIR [--address HOST:PORT] [-- juicefs gateway opts]
#   s3_gateway.sh stop  --state DIR
#   s3_gateway.sh env   --state DIR     print the AWS_* exports a client needs (eval "$(...)")
#
# The keys are MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (the gateway's own variables; the password
# needs 8 characters or more); the bucket is the volume's name. Options also come from the
# environment: ASRD_JFS_META, ASRD_S3GW_STATE, ASRD_S3GW_ADDRESS (default 127.0.0.1:9000),
# ASRD_S3GW_TIMEOUT (seconds to wait for the gateway to answer; default 60), ASRD_JFS_BIN.
# `start` is idempotent: a gateway of this state folder that is alive and answering is kept; one
# that died is started again. The state folder keeps its pid, address, keys and log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "s3_gateway.sh: $*" >&2; exit 1; }
usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
meta=${ASRD_JFS_META:-}
state=${ASRD_S3GW_STATE:-}
address=${ASRD_S3GW_ADDRESS:-127.0.0.1:9000}
timeout=${ASRD_S3GW_TIMEOUT:-60}
extra=()
while (($#)); do
  case "$1" in
    --meta) meta=$2; shift 2 ;;
    --state) state=$2; shift 2 ;;
    --address) address=$2; shift 2 ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) usage ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$state" ] || die "--state DIR (or ASRD_S3GW_STATE) is required"

. "$here/juicefs_bin.sh"
. "$here/stop_pid.sh"

alive() {  # the recorded gateway process runs and answers MinIO's liveness probe
  [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null &&
    curl -fsS -o /dev/null "http://$(cat "$state/address")/minio/health/live"
}

case "$cmd" in
  start)
    [ -n "$meta" ] || die "--meta URL (or ASRD_JFS_META) is required"
    [ -n "${MINIO_ROOT_USER:-}" ] && [ -n "${MINIO_ROOT_PASSWORD:-}" ] ||
      die "set MINIO_ROOT_USER and MINIO_ROOT_PASSWORD (the S3 access and secret keys)"
    mkdir -p "$state"
    exec 9>"$state/lock"; flock 9
    if alive; then echo "s3_gateway.sh: already serving on $(cat "$state/address")" >&2; exit 0; fi
    jfs=$(find_juicefs)
    echo "$address" >"$state/address"
    printf '%s\n%s\n' "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >"$state/keys"
    chmod 600 "$state/keys"
    setsid "$jfs" gateway "$meta" "$address" --no-banner --log "$state/gateway.log" \
      "${extra[@]}" >>"$state/gateway.log" 2>&1 9>&- </dev/null &
    echo $! >"$state/pid"
    for ((i = 0; i < timeout * 10; i++)); do
      alive && { echo "s3_gateway.sh: serving on $address" >&2; exit 0; }
      kill -0 "$(cat "$state/pid")" 2>/dev/null || break
      sleep 0.1
    done
    tail -n 20 "$state/gateway.log" >&2 || true
    die "the gateway did not answer on $address"
    ;;
  stop)
    [ -f "$state/pid" ] || exit 0
    stop_pid "$(cat "$state/pid")" "$timeout"
    rm -f "$state/pid"
    ;;
  env)
    [ -f "$state/address" ] && [ -f "$state/keys" ] || die "no gateway started in $state"
    { read -r user; read -r password; } <"$state/keys"
    printf 'export AWS_ENDPOINT_URL=%q\n' "http://$(cat "$state/address")"
    printf 'export AWS_ACCESS_KEY_ID=%q\n' "$user"
    printf 'export AWS_SECRET_ACCESS_KEY=%q\n' "$password"
    printf 'export AWS_REGION=%q\n' "${AWS_REGION:-us-east-1}"
    ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Format, mount, unmount and check a JuiceFS volume: the shared store every node of a run mounts.
#
#   juicefs.sh format --meta URL --bucket DIR_OR_URL [--storage file] [--name asrd] [-- juicefs opts]
#   juicefs.sh mount  --meta URL --mount DIR [--cache-dir DIR] [--log FILE] [-- juicefs opts]
#   juicefs.sh umount --mount DIR [--force]
#   juicefs.sh status --mount DIR [--meta URL]        exit 0 when mounted and alive, 1 when not
#
# Every option also comes from the environment, so one sbatch setup line serves every node:
#   ASRD_JFS_META       metadata engine: sqlite3:///path/meta.db (one machine), redis://host:6379/1,
#                       postgres://user@host:5432/db, tikv://h1:2379,h2:2379/prefix (clusters).
#                       Passwords belong in META_PASSWORD, which juicefs reads itself.
#   ASRD_JFS_BUCKET     object storage: a directory for --storage file, else the bucket URL
#                       (keys in ACCESS_KEY / SECRET_KEY, read by juicefs itself)
#   ASRD_JFS_STORAGE    object storage type (file, s3, gs, oss, minio, ...); default file
#   ASRD_JFS_NAME       volume name for format (3-63 letters, digits, '-'); default asrd
#   ASRD_JFS_MOUNT      the mount point
#   ASRD_JFS_CACHE_DIR  JuiceFS's block cache on node-local disk (default: juicefs's /var/jfsCache)
#   ASRD_JFS_LOG        the client's log file (default: juicefs's /var/log/juicefs.log)
#   ASRD_JFS_TIMEOUT    seconds to wait for a mount or unmount to take effect; default 60
#   ASRD_JFS_OPTS       extra options for juicefs format/mount (word-split). Not --writeback:
#                       it acknowledges fsync before the data reaches object storage, so a node
#                       that dies can lose a shard whose marker other nodes already see.
#   ASRD_JFS_BIN        the juicefs binary (default: the venv's bin, then PATH)
#
# `mount` is idempotent and safe when several tasks of one node run it at once (a node-local
# flock serialises them): an existing live mount is kept, a dead one (the client died, the mount
# point answers "Transport endpoint is not connected") is cleared and mounted again.
# sbatch setup line (mounts on each node unless already mounted), with ASRD_JFS_META and
# ASRD_JFS_MOUNT exported by the job:  bash /path/to/hpc/scripts/juicefs.sh mount
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "juicefs.sh: $*" >&2; exit 1; }
say() { echo "juicefs.sh: $*" >&2; }
redact() { sed -E 's#://([^:/@]*):[^@/]*@#://\1:***@#' <<<"$1"; }

usage() { sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

cmd=${1:-}; [ -n "$cmd" ] || usage; shift
meta=${ASRD_JFS_META:-}
bucket=${ASRD_JFS_BUCKET:-}
storage=${ASRD_JFS_STORAGE:-file}
name=${ASRD_JFS_NAME:-asrd}
mnt=${ASRD_JFS_MOUNT:-}
cache_dir=${ASRD_JFS_CACHE_DIR:-}
log=${ASRD_JFS_LOG:-}
timeout=${ASRD_JFS_TIMEOUT:-60}
force=0
read -r -a extra <<<"${ASRD_JFS_OPTS:-}"
while (($#)); do
  case "$1" in
    --meta) meta=$2; shift 2 ;;
    --bucket) bucket=$2; shift 2 ;;
    --storage) storage=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --mount) mnt=$2; shift 2 ;;
    --cache-dir) cache_dir=$2; shift 2 ;;
    --log) log=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --force) force=1; shift ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) usage ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

. "$here/juicefs_bin.sh"

ensure_fuse() {
  if ! command -v fusermount3 >/dev/null && ! command -v fusermount >/dev/null; then
    [ "$(id -u)" = 0 ] || die "FUSE tools missing: install the Debian package fuse3 (as root)"
    say "installing fuse3"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq --no-install-recommends fuse3 >/dev/null; } \
      || die "apt-get install fuse3 failed"
  fi
  [ -e /dev/fuse ] || die "/dev/fuse is missing: this node (or container) cannot mount FUSE file systems"
}

# The file-system type mounted exactly at $mnt ("" when nothing is), from /proc/mounts.
fstype_at() {
  local esc=${1// /\\040}
  awk -v m="$esc" '$2 == m { t = $3 } END { print t }' /proc/mounts
}

# 0: a live JuiceFS mount; 1: not mounted; 2: mounted but dead (its client is gone).
mount_state() {
  local t; t=$(fstype_at "$1")
  [ -n "$t" ] || return 1
  [ "$t" = fuse.juicefs ] || die "$1 is mounted, but as $t, not JuiceFS"
  stat -f -t "$1" >/dev/null 2>&1 || return 2  # statfs always reaches the client
  return 0
}

wait_for() {  # wait_for STATE: until mount_state returns STATE, or the timeout passes
  local want=$1 deadline=$((SECONDS + timeout)) rc
  while :; do
    rc=0; mount_state "$mnt" || rc=$?
    [ "$rc" = "$want" ] && return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

lazy_unmount() {
  fusermount3 -uz "$1" 2>/dev/null || fusermount -uz "$1" 2>/dev/null || umount -l "$1"
}

need() { [ -n "$2" ] || die "$1 is not set (pass $1 or set its ASRD_JFS_* variable; see --help)"; }

do_format() {
  need --meta "$meta"
  need --bucket "$bucket"
  local jfs; jfs=$(find_juicefs)
  if [[ $meta == sqlite3://* ]]; then
    local db=${meta#sqlite3://}; db=${db%%\?*}
    mkdir -p "$(dirname "$db")"
    # `juicefs status` would create an empty database here, so a missing file means "new volume".
    if [ -s "$db" ] && "$jfs" status "$meta" >/dev/null 2>&1; then
      say "volume already formatted at $(redact "$meta")"; return 0
    fi
  elif "$jfs" status "$meta" >/dev/null 2>&1; then
    say "volume already formatted at $(redact "$meta")"; return 0
  fi
  if [ "$storage" = file ]; then
    mkdir -p "$bucket"; bucket=${bucket%/}/
  fi
  "$jfs" --no-color format --storage "$storage" --bucket "$bucket" "${extra[@]}" "$meta" "$name"
}

do_mount() {
  need --meta "$meta"
  need --mount "$mnt"
  mnt=$(realpath -m "$mnt")
  local jfs; jfs=$(find_juicefs)
  # One node-local lock per mount point: tasks sharing a node run this at the same moment.
  local lock="/tmp/.asrd-juicefs-$(md5sum <<<"$mnt" | cut -c1-16).lock"
  exec 9>"$lock"
  flock -w "$timeout" 9 || die "another mount of $mnt is still running after ${timeout}s"
  local rc=0; mount_state "$mnt" || rc=$?
  if [ "$rc" = 0 ]; then say "already mounted: $mnt"; return 0; fi
  if [ "$rc" = 2 ]; then say "clearing dead mount at $mnt"; lazy_unmount "$mnt"; fi
  ensure_fuse
  mkdir -p "$mnt"
  if [ -n "$(ls -A "$mnt" 2>/dev/null)" ]; then
    say "warning: $mnt is not empty; the mount hides what is in it (written while unmounted?)"
  fi
  local opts=(-d --no-usage-report)
  [ -n "$log" ] && { mkdir -p "$(dirname "$log")"; opts+=(--log "$log"); }
  [ -n "$cache_dir" ] && opts+=(--cache-dir "$cache_dir")
  # 9>&-: the daemon must not inherit (and hold forever) the node-local mount lock.
  "$jfs" --no-color mount "${opts[@]}" "${extra[@]}" "$meta" "$mnt" 9>&- \
    || die "juicefs mount of $(redact "$meta") on $mnt failed${log:+ (log: $log)}"
  wait_for 0 || die "$mnt did not come up within ${timeout}s${log:+ (log: $log)}"
  say "mounted $(redact "$meta") on $mnt"
}

do_umount() {
  need --mount "$mnt"
  mnt=$(realpath -m "$mnt")
  local rc=0; mount_state "$mnt" || rc=$?
  if [ "$rc" = 1 ]; then say "not mounted: $mnt"; return 0; fi
  if [ "$rc" = 2 ]; then lazy_unmount "$mnt"
  else
    local jfs; jfs=$(find_juicefs)
    if ! "$jfs" umount "$mnt"; then
      [ "$force" = 1 ] || die "unmount of $mnt failed (busy? retry with --force)"
      "$jfs" umount --force "$mnt" || lazy_unmount "$mnt"
    fi
  fi
  wait_for 1 || die "$mnt is still mounted after ${timeout}s"
  say "unmounted $mnt"
}

do_status() {
  need --mount "$mnt"
  mnt=$(realpath -m "$mnt")
  local rc=0; mount_state "$mnt" || rc=$?
  case "$rc" in
    0) echo "mounted: $mnt (fuse.juicefs)" ;;
    1) echo "not mounted: $mnt" ;;
    2) echo "dead: $mnt (its JuiceFS client is gone; run mount again)" ;;
  esac
  if [ -n "$meta" ]; then "$(find_juicefs)" --no-color status "$meta" 2>/dev/null || true; fi
  [ "$rc" = 0 ]
}

case "$cmd" in
  format) do_format ;;
  mount) do_mount ;;
  umount|unmount) do_umount ;;
  status) do_status ;;
  *) usage ;;
esac

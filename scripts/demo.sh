#!/usr/bin/env bash
# The README's main command: sample speech -> index -> all shards on this machine -> merge -> WER.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/bootstrap.sh" demo
exec "$root/.venv/bin/asrd" demo --workdir "${ASRD_DEMO_DIR:-$root/demo}" "$@"

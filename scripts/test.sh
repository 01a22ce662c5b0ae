#!/usr/bin/env bash
# The README's test command (and .ci/run's): installs what the tests need, then runs them all.
# Tests that need SLURM, JuiceFS or Redis start those services from hpc/scripts themselves.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/bootstrap.sh" test
cd "$root"
exec .venv/bin/python -m pytest -q -m "not gpu" "$@"

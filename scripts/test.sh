#!/usr/bin/env bash
# The README's test command (and .ci/run's): installs what the tests need, then runs them all.
# Tests that need SLURM, JuiceFS or Redis start those services from hpc/scripts themselves.
# Two pytest-xdist workers (ASRD_TEST_WORKERS; 0 runs in this process): the tests of the shared
# SLURM cluster and JuiceFS run one after another in one worker, the rest a file at a time
# beside them (tests/conftest.py groups them), which fills the 2 cores the tests' waits on
# SLURM, processes and Ray leave idle.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/bootstrap.sh" test
cd "$root"
exec .venv/bin/python -m pytest -q -m "not gpu" -n "${ASRD_TEST_WORKERS:-2}" --dist loadgroup "$@"

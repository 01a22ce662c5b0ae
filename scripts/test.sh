#!/usr/bin/env bash
# The README's test command (and .ci/run's): installs what the tests need, then runs them all.
# Tests that need SLURM, JuiceFS or Redis start those services from hpc/scripts themselves.
# Three pytest-xdist workers (ASRD_TEST_WORKERS; 0 runs them in this process): the SLURM tests
# run one after another in one worker and the JuiceFS/Redis/S3 ones in another (tests/conftest.py
# groups them, and puts those groups first), the other files beside them. Much of the suite
# waits (on SLURM, on processes it killed, on Ray starting), so even 2 cores take three workers:
# 1,110 s against 1,600 s in one process (bench/RESULTS.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/bootstrap.sh" test
cd "$root"
exec .venv/bin/python -m pytest -q -m "not gpu" -n "${ASRD_TEST_WORKERS:-3}" --dist loadgroup \
  --no-loadscope-reorder "$@"

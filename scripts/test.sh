#!/usr/bin/env bash
# The README's test command (and .ci/run's): installs what the tests need, then runs them all.
# Tests that need SLURM, JuiceFS or Redis start those services from hpc/scripts themselves.
# Two pytest-xdist workers (ASRD_TEST_WORKERS; 0 runs them in this process): the SLURM tests
# run one after another in one worker, the JuiceFS/Redis/S3 ones likewise (tests/conftest.py
# groups them and puts those groups first), the other files beside them. Much of the suite waits
# (on SLURM, on processes it killed, on Ray starting): on 2 cores two workers took 923 s against
# 1,600 s in one process, and three 1,110 s, each test about twice as slow (bench/RESULTS.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/bootstrap.sh" test
cd "$root"
# This machine sets PYTHONDONTWRITEBYTECODE, so without this each of the suite's ~370 processes
# that import asrd (its commands, Ray's workers, SLURM's tasks) compiles it again: 0.13 s of CPU
# each (measured: importing the runtime 1.23 s compiled, 1.36 s not). Stale files are ignored.
.venv/bin/python -m compileall -q -j 0 asrd hpc >/dev/null
exec .venv/bin/python -m pytest -q -m "not gpu" -n "${ASRD_TEST_WORKERS:-2}" --dist loadgroup \
  --no-loadscope-reorder "$@"

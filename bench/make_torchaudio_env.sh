#!/usr/bin/env bash
# The naive baseline of bench/bench_decode.py needs torchaudio, whose 2.11 wheel only loads with
# torch 2.11 (the project's CPU torch is 2.13), so it lives in its own venv (~5 GB, a CUDA build).
set -euo pipefail
venv=${1:-/tmp/asrd-torchaudio-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
PIP_CONSTRAINT= "$venv/bin/pip" install -q --isolated torch==2.11.0 torchaudio==2.11.0 torchcodec soundfile
echo "$venv/bin/python"

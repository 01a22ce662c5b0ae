"""What the GPU machine's packages offer the generic transcription engine: versions, the
architectures vLLM's registry can transcribe, and which of their processors and tokenizers the
installed transformers / mistral_common provide (one JSON line, FIGURE-free; read by a person).

    python bench/gpu/probe_env.py
"""

from __future__ import annotations

import importlib
import json


def main() -> None:
    out: dict[str, object] = {}
    for name in ("torch", "vllm", "transformers", "mistral_common", "tokenizers"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as e:  # a missing package is the answer, not a failure
            out[name] = f"missing: {e}"
    from asrd.engines.vllm_transcription import TRANSCRIPTION_ARCHITECTURES, vllm_transcribes

    archs = [a for a in TRANSCRIPTION_ARCHITECTURES if vllm_transcribes(a)]
    out["transcription_architectures"] = sorted(archs)
    import transformers

    have = {}
    for cls in ("Qwen3ASRConfig", "Qwen3ASRProcessor", "VoxtralConfig", "VoxtralProcessor",
                "GraniteSpeechConfig", "GraniteSpeechProcessor", "Gemma3nConfig",
                "Gemma3nProcessor", "GlmAsrConfig", "CohereAsrConfig"):
        have[cls] = hasattr(transformers, cls)
    out["transformers_classes"] = have
    print("PROBE " + json.dumps(out))


if __name__ == "__main__":
    main()

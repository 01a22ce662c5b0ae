"""What the language-ID pass costs the engine's process per segment for a vLLM engine, with
inputs rendered there from raw audio (what a routed run did: the prompt's language is known only
after the pass) against inputs the decode actors prepared, re-made in the routed language
(asrd.engines.vllm_inputs.Relanguager: a per-language reference prompt spliced around the
prepared audio part). The engine's process is the limit of a small vLLM model (bench/RESULTS.md:
rendering in the decode actors made Whisper-base 1.5x faster end to end), so its CPU time per
segment is the figure. Needs vLLM's Python code importable (a GPU node's install, or vLLM's
pure-Python parts on a CPU machine: no GPU is used).

Models: Whisper-base's processor (asrd's prompts; the features of 30 s windows) and Voxtral's
(its vLLM class's prompts), folders of asrd.testing (no weights: only the processors run).
Clips of noise, 6-10 s (the cost does not depend on what is said). Also the bytes each prepared
segment puts in Ray's object store (pickled), alone and with the raw audio carried for an
identifier that reads it (faster-whisper).

    python bench/bench_relanguage.py [--clips 40] [--record]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import report  # noqa: E402

from asrd.engines.vllm_engine import model_formats  # noqa: E402
from asrd.engines.vllm_inputs import (InputRenderer, PromptSpec, Relanguager,  # noqa: E402
                                      RoutedPreparer, prompt_maker)
from asrd.engines.vllm_transcription import TranscriptionSpec  # noqa: E402
from asrd.testing import speech_models, tiny_models  # noqa: E402

LANGUAGES = ("de", "es", "fr", "it")


def made(folder: Path, spec):
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig
    from vllm.renderers import renderer_from_config

    model = ModelConfig(model=str(folder), tokenizer=str(folder), mm_processor_cache_gb=0,
                        limit_mm_per_prompt={"audio": 1}, **model_formats(folder))
    vllm_config = VllmConfig(model_config=model, device_config=DeviceConfig(device="cpu"))
    renderer = renderer_from_config(vllm_config)
    return (InputRenderer(vllm_config, spec),
            Relanguager(renderer, model, prompt_maker(spec, renderer.get_tokenizer(), model)))


def cpu_ms_per(fn, items) -> float:
    t = time.process_time()
    for x in items:
        fn(x)
    return 1000 * (time.process_time() - t) / len(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="asrd-relanguage-"))
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, int(rng.uniform(6, 10) * 16000)).astype(np.float32)
             for _ in range(args.clips)]
    models = {
        "Whisper-base (asrd's prompts)": (
            tiny_models.build_whisper(root / "whisper", tiny_models.WHISPER_BASE, weights=False),
            PromptSpec("whisper", "transcribe", "", None, "en", "cpu")),
        "Voxtral (its vLLM class's prompts)": (
            speech_models.build_voxtral(root / "voxtral"), TranscriptionSpec("transcribe", "en", "")),
    }
    figures = []
    workload = (f"{args.clips} clips of 6-10 s, routed from the config's en to {'/'.join(LANGUAGES)} "
                "in turn; CPU ms per segment in one process (this one), after a warm-up")
    for name, (folder, spec) in models.items():
        renderer, relanguager = made(folder, spec)
        routed = [(clip, LANGUAGES[k % len(LANGUAGES)]) for k, clip in enumerate(clips)]
        renderer.prepare(clips[0], None)
        for language in LANGUAGES:  # the references, made once per language and engine
            relanguager.reference(language)
        relanguager.reference(None)
        prepared = [renderer.prepare(clip, None) for clip in clips]
        scratch = cpu_ms_per(lambda x: renderer.prepare(*x), routed)
        remade = cpu_ms_per(lambda k: relanguager.relanguage(prepared[k], None, routed[k][1]),
                            range(len(clips)))
        alone = RoutedPreparer(renderer, None, carry_audio=False)
        carried = RoutedPreparer(renderer, None, carry_audio=True)
        size = np.mean([len(pickle.dumps(alone.prepare(c, None))) for c in clips[:10]]) / 1e6
        with_audio = np.mean([len(pickle.dumps(carried.prepare(c, None)))
                              for c in clips[:10]]) / 1e6
        figures += [
            (f"language-ID pass, {name}: engine-process CPU ms per segment, rendered there "
             "from raw audio vs prepared in a decode actor and re-made in the routed language",
             f"{scratch:.2f} vs {remade:.3f} ({scratch / remade:.0f}x less)", workload),
            (f"... {name}: bytes a prepared segment puts in the object store (pickled), alone "
             "and with its raw audio carried for a faster-whisper identifier",
             f"{size:.2f} MB, {with_audio:.2f} MB", f"the first 10 of the {args.clips} clips"),
        ]
    report("relanguage", figures, args.record)


if __name__ == "__main__":
    main()

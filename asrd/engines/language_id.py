"""Language ID as a first pass: each segment's spoken language is identified before the engine
transcribes it, and routes it (the engine transcribes in that language: its per-language prompt).

`LanguageRoutingEngine` wraps the run's engine in the same actor (one more, small, model per
actor). For each segment it asks the identifier for the spoken language; a segment the index
gave no language is transcribed in the identified one when its probability is at least
`language_id.min_p`, else in `engine.language` as without the pass. The detection becomes the
hypothesis' spoken language (the row's `audio_language`, `audio_language_p`,
`audio_expected_p`: Whisper's detection, as `quality.audio_language` means them), and the routed
language travels with it to the row's `language` column.

Identifiers:
- `WhisperDetector` (`language_id.kind=faster_whisper`): faster-whisper's `detect_language`, one
  encoder pass and one decoder step per segment on the CPU. When the engine is faster-whisper
  with the same model, the engine's own model is used: the transcription then reuses the
  encoder output the detection left, so the pass costs one decoder step.
- `EngineIdentifier` (`language_id.kind=vllm`): an asrd engine whose hypotheses state the
  language: vLLM's Whisper with no forced language and one output token (the language token
  after <|startoftranscript|>, read with its log-probability, asrd.engines.vllm_signals), or
  vLLM's FireRedLID class, whose output is the language label (no probability: such a row is
  routed, never unsure).

Inputs rendered in the decode actors (vLLM with `engine.vllm.render_in: decode`, the default):
a rendered input holds its prompt, whose language is only known after the pass. So the decode
actors render the engine's input in the segment's own language (the index's, else
`engine.language`) and the pass re-makes it in the identified one in the engine's process: the
prompt text around the prepared audio part comes from a reference input of that language,
rendered once (vllm_inputs.Relanguager), so no audio features are computed there. The
identifier's input: the same prepared features with its own prompt where its features are the
engine's (vLLM's Whisper asked for its language token, of the engine's folder or of the same
feature extractor: vllm_engine.shares_features), its own input rendered beside the engine's
where it is another vLLM model, and the raw audio, carried beside the prepared input, where it
reads that (faster-whisper computes its own features).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from asrd.engines.base import Engine, Hypothesis, Segment
from asrd.engines.registry import build_engine, engine_class

if TYPE_CHECKING:
    from asrd.engines.vllm_engine import VllmEngine
    from asrd.engines.vllm_inputs import Relanguager, RoutedPreparer

log = logging.getLogger(__name__)

# the quality keys engines read: their own signals, without spoken-language detection
NO_DETECTION = {"enabled": True, "audio_language": False, "doubt_words": 0}


@dataclass(frozen=True)
class SpokenLanguage:
    """An identifier's answer for one segment."""

    language: str  # ISO 639-1 code, lower case
    p: float | None  # its probability (None: the identifier states none)
    probs: tuple[tuple[str, float], ...] = ()  # every language's probability, where known

    def p_of(self, language: str | None) -> float | None:
        """The probability of `language` (None where it cannot be told)."""
        if language is None:
            return None
        if language.lower() == self.language:
            return self.p
        return dict(self.probs).get(language.lower(), 0.0) if self.probs else None


@dataclass(frozen=True)
class Routing:
    """The `language_id` section as the engine actor uses it."""

    min_p: float  # a segment is routed to its language only from this probability up
    default_language: str | None  # engine.language: a segment's language when not routed

    @classmethod
    def of(cls, language_id: Any, engine_language: str | None) -> Routing:
        return cls(float(language_id.min_p), engine_language or None)

    def route(self, spoken: SpokenLanguage | None) -> str | None:
        """The language a segment without one from the index is transcribed in: the spoken
        one when sure enough, else None (the engine's own default)."""
        if spoken is None or (spoken.p is not None and spoken.p < self.min_p):
            return None
        return spoken.language


class LanguageIdentifier(ABC):
    """Identifies the spoken language of segments of 16 kHz mono audio."""

    #: whether it runs on the engine's own model (which keeps its last encoder output)
    shares_engine_model: bool = False

    @abstractmethod
    def identify(self, segments: list[Segment]) -> list[SpokenLanguage | None]:
        """One answer per segment, in order; None where no language could be told."""

    def close(self) -> None:
        """Release the model (a model shared with the engine is the engine's to release)."""


class WhisperDetector(LanguageIdentifier):
    """faster-whisper's language detection on each segment's 30 s window."""

    def __init__(self, model: Any, shares_engine_model: bool = False):
        """`model`: a faster_whisper WhisperModel (the engine's own, or one of its own)."""
        self.model, self.shares_engine_model = model, shares_engine_model

    @classmethod
    def load(cls, name: str, compute_type: str, threads: int) -> WhisperDetector:
        from asrd.engines.faster_whisper_engine import _reusing_model_class, resolve_model

        model = _reusing_model_class()(str(resolve_model(name)), device="cpu",
                                       compute_type=compute_type, cpu_threads=max(1, threads),
                                       local_files_only=True)
        return cls(model)

    def identify(self, segments: list[Segment]) -> list[SpokenLanguage | None]:
        if not self.model.model.is_multilingual:
            return [None] * len(segments)
        out: list[SpokenLanguage | None] = []
        for seg in segments:
            features = self.model.feature_extractor(seg.audio)
            # without the last frame, as the transcription encodes the window: a model that
            # keeps its encoder output (the engine's) then encodes it once for both
            language, p, every = self.model.detect_language(features=features[..., :-1])
            out.append(SpokenLanguage(language, round(float(p), 6),
                                      tuple((k, round(float(v), 6)) for k, v in every)))
        return out


def spoken_of(said: Hypothesis) -> SpokenLanguage | None:
    """The language an engine's hypothesis states (vLLM's Whisper: its first output token, with
    that token's probability; FireRedLID: its label, without one)."""
    return SpokenLanguage(said.language.lower(), said.language_p) if said.language else None


class EngineIdentifier(LanguageIdentifier):
    """An asrd engine whose hypotheses state the spoken language (vLLM's Whisper asked for its
    language token, FireRedLID); its texts are not used."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def identify(self, segments: list[Segment]) -> list[SpokenLanguage | None]:
        """`segments`: raw audio, or inputs prepared for this identifier's engine."""
        return [spoken_of(h) for h in self.engine.hypotheses(
            [replace(s, language=None) for s in segments])]

    def vllm_engine(self) -> VllmEngine | None:
        """Its engine where that is vLLM's (whose inputs the decode actors can render)."""
        from asrd.engines.vllm_engine import VllmEngine

        return self.engine if isinstance(self.engine, VllmEngine) else None

    def close(self) -> None:
        self.engine.close()


def identifier_engine_config(engine_cfg: DictConfig, language_id: DictConfig) -> DictConfig:
    """The engine config of an `EngineIdentifier`: the run's engine section with the
    identifier's model, no forced language and `language_id.max_new_tokens` output tokens
    (Whisper writes its language token first: one is enough), its inputs made in its own
    process where it gets raw audio (prepared ones come from the decode actors), and its own
    share of the GPU; its dtype is the engine's."""
    return OmegaConf.merge(engine_cfg, {
        "kind": language_id.kind, "model": language_id.model, "language": None,
        "task": "transcribe",
        "max_new_tokens": language_id.max_new_tokens, "beam_size": 1, "temperature": 0.0,
        "gpu_memory_utilization": language_id.gpu_memory_utilization,
        "vllm": {"render_in": "engine", "prompts": "auto", "request_prompt": None}})


def check_identifier(engine_cfg: DictConfig, language_id: DictConfig,
                     packages: bool = True) -> None:
    """Refuse, before a run is frozen, an identifier that cannot be built (its model or
    package missing): EngineUnavailable naming the fix; loads nothing."""
    cfg = (OmegaConf.merge(engine_cfg, {"kind": "faster_whisper", "model": language_id.model})
           if language_id.kind == "faster_whisper"
           else identifier_engine_config(engine_cfg, language_id))
    engine_class(str(cfg.kind)).check(cfg, packages=packages)


def build_identifier(engine_cfg: DictConfig, language_id: DictConfig,
                     engine: Engine) -> LanguageIdentifier:
    """The identifier `language_id.kind` names; faster-whisper shares the engine's model when
    it is the same one."""
    if language_id.kind == "faster_whisper":
        from asrd.engines.faster_whisper_engine import FasterWhisperEngine

        if isinstance(engine, FasterWhisperEngine) and str(engine.cfg.model) == str(
                language_id.model) and engine.cfg.compute_type == language_id.compute_type:
            return WhisperDetector(engine.model, shares_engine_model=True)
        return WhisperDetector.load(str(language_id.model), str(language_id.compute_type),
                                    int(engine_cfg.cpus_per_engine))
    from asrd.engines.registry import build_engine

    # its signals on (the language token's log-probability), no prompt log-probabilities
    return EngineIdentifier(build_engine(identifier_engine_config(engine_cfg, language_id),
                                         OmegaConf.create(NO_DETECTION)))


class LanguageRoutingEngine(Engine):
    """The run's engine behind the language-ID pass (see the module's docstring). It packs no
    clips (`supports_packing` false): a packed window is transcribed in one language."""

    def __init__(self, inner: Engine, identifier: LanguageIdentifier, routing: Routing):
        from asrd.engines.vllm_engine import VllmEngine

        self.inner, self.identifier, self.routing = inner, identifier, routing
        self.max_concurrency = inner.max_concurrency
        self._vllm = inner if isinstance(inner, VllmEngine) else None
        self._vllm_identifier = (identifier.vllm_engine()
                                 if isinstance(identifier, EngineIdentifier) else None)
        # the identifier takes the engine's prepared features with its own prompt
        self._shared = (self._vllm_identifier if self._vllm is not None
                        and self._vllm_identifier is not None
                        and self._vllm_identifier.same_processor(self._vllm) else None)

    @property
    def name(self) -> str:
        return self.inner.name

    def input_preparer(self) -> RoutedPreparer | None:
        """Where the engine's inputs are rendered in the decode actors (vLLM, `render_in:
        decode`): those in each segment's own language, with what the identifier needs (see the
        module's docstring). None (raw audio, rendered here) for any other engine, or for a
        model whose prompt text depends on the audio (it cannot be re-made in another
        language around prepared audio)."""
        from asrd.engines.vllm_inputs import RoutedPreparer

        if self._vllm is None or self._vllm.input_preparer() is None:
            return None
        if not self._vllm.relanguager.splices():
            log.warning("%s: the prompt's text depends on the audio; the language-ID pass "
                        "renders its inputs in the engine's process", self.inner.name)
            return None
        ident = self._vllm_identifier
        own = None if ident is None or self._shared else ident.input_renderer()
        return RoutedPreparer(self._vllm.input_renderer(), own, carry_audio=ident is None)

    def _for_identifier(self, seg: Segment) -> Segment:
        return identifier_segment(seg, self._vllm.relanguager if self._vllm else None,
                                  self._shared.relanguager if self._shared else None)

    def _for_engine(self, seg: Segment, route: str | None) -> Segment:
        return engine_segment(seg, route, self.routing.default_language,
                              self._vllm.relanguager if self._vllm else None)

    def transcribe(self, segments: list[Segment]) -> list[str]:
        return [h.text for h in self.hypotheses(segments)]

    def hypotheses(self, segments: list[Segment]) -> list[Hypothesis]:
        """Identify, route, transcribe; the detection replaces the engine's own (if any). An
        identifier sharing the engine's model takes one segment at a time, so that the
        transcription finds the encoder output the detection left (the model keeps one)."""
        if self.identifier.shares_engine_model and len(segments) > 1:
            return [h for s in segments for h in self.hypotheses([s])]
        spoken = self.identifier.identify([self._for_identifier(s) for s in segments])
        routed = [None if s.language else self.routing.route(found)
                  for s, found in zip(segments, spoken)]
        given = [self._for_engine(s, r) for s, r in zip(segments, routed)]
        got = self.inner.hypotheses(given)
        out = []
        for seg, found, route, h in zip(given, spoken, routed, got, strict=True):
            expected = seg.language or self.routing.default_language
            out.append(replace(h, language=found.language if found else None,
                               language_p=found.p if found else None,
                               expected_language_p=found.p_of(expected) if found else None,
                               routed_language=route))
        return out

    def close(self) -> None:
        self.identifier.close()
        self.inner.close()


def identifier_segment(seg: Segment, engine: Relanguager | None,
                       shared: Relanguager | None) -> Segment:
    """The identifier's segment of one the engine gets: as it is (raw audio), or of an input
    the decode actors prepared for the pass (`RoutedInput`): the identifier's own input, or
    the engine's prepared features with the identifier's prompt where it is the same model
    (`shared`: the identifier's Relanguager, `engine` the engine's), or the carried audio."""
    from asrd.engines.vllm_inputs import RoutedInput, splice

    routed = seg.prepared
    if not isinstance(routed, RoutedInput):
        return seg
    prepared = routed.identifier
    if prepared is None and shared is not None and engine is not None:
        prepared = splice(routed.engine, engine.reference(routed.language),
                          shared.reference(None))
    return Segment(routed.audio, None, prepared, seg.id)


def engine_segment(seg: Segment, route: str | None, default_language: str | None,
                   relanguager: Relanguager | None) -> Segment:
    """The engine's segment in the routed language (`route`; None: the segment's own): a
    prepared input rendered in another language is re-made in it by `relanguager`."""
    from asrd.engines.vllm_inputs import RoutedInput

    routed = seg.prepared
    if not isinstance(routed, RoutedInput):
        return replace(seg, language=route) if route else seg
    engine_input = routed.engine
    if route and route != (routed.language or default_language):
        if relanguager is None:
            raise ValueError("an input prepared for the language-ID pass reached an engine "
                             "that cannot re-make it in another language")
        engine_input = relanguager.relanguage(engine_input, routed.language, route)
    return Segment(None, route or seg.language, engine_input, seg.id)


def with_language_id(engine_cfg: DictConfig, quality: DictConfig | None,
                     language_id: DictConfig) -> Engine:
    """The run's engine behind the pass. The engine itself detects no spoken language (the
    pass detects it for every segment: doing it twice would cost without telling more)."""
    quiet = OmegaConf.merge(quality if quality is not None else NO_DETECTION,
                            {"audio_language": False})
    inner = build_engine(engine_cfg, quiet)
    try:
        identifier = build_identifier(engine_cfg, language_id, inner)
    except BaseException:
        inner.close()
        raise
    return LanguageRoutingEngine(inner, identifier,
                                 Routing.of(language_id, engine_cfg.language))


def build_run_engine(engine_cfg: DictConfig, quality: DictConfig | None,
                     language_id: DictConfig | None) -> Engine:
    """A task's engine: the one `engine.kind` names, behind the pass when
    `language_id.enabled`."""
    if language_id is not None and language_id.enabled:
        return with_language_id(engine_cfg, quality, language_id)
    return build_engine(engine_cfg, quality)

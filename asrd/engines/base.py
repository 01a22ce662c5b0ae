"""The one interface every ASR engine implements: a batch of 16 kHz mono segments in, texts out.

The pipeline owns batching, retries and placement; an engine only turns audio into text. Engines
are created once per task (start-up can take a minute on a GPU) and reused for all its shards.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from omegaconf import DictConfig

from asrd.audio.pack import Member


class EngineUnavailable(RuntimeError):
    """The engine cannot be built here (missing package or model); the message says how to fix it."""


@dataclass(frozen=True)
class Segment:
    """One model input: at most the engine's window (30 s), 16 kHz float32 mono, or the input
    the engine's `InputPreparer` already made of such audio in a decode actor."""

    audio: np.ndarray | None
    language: str | None = None  # per-item language from the index, overrides the config
    prepared: Any = None
    id: str | None = None  # the index row's id (for tracing and fault hooks)


@dataclass(frozen=True)
class PackedWindow:
    """One model input holding several short clips, and where each lies in it."""

    segment: Segment
    members: tuple[Member, ...]


@dataclass(frozen=True)
class SpeakerTurn:
    """One speaker's turn as a diarising model writes it: seconds from the start of the engine
    input it was given (the row's time base once assembled), and an anonymous tag ("S01") that
    names a speaker within that one input only."""

    speaker: str
    start_s: float
    end_s: float | None  # None: the model wrote no end and no turn followed it
    text: str


@dataclass(frozen=True)
class Hypothesis:
    """A segment's text and what the model said of it (None where an engine cannot say)."""

    text: str
    avg_logprob: float | None = None  # mean log-probability of the output tokens
    no_speech_prob: float | None = None  # Whisper's probability of no speech in the segment
    language: str | None = None  # the spoken language by the model's own detection ...
    language_p: float | None = None  # ... and its probability
    expected_language_p: float | None = None  # the probability of the language it was forced to
    routed_language: str | None = None  # the language the language-ID pass gave the segment
    speaker_turns: tuple[SpeakerTurn, ...] | None = None  # a diarising model's turns (else None)


def detection_threshold(quality: DictConfig | None, cheap: bool) -> float | None:
    """The average log-probability below which an engine runs Whisper's spoken-language
    detection on a segment whose transcription language is forced: inf for every segment
    (`quality.audio_language` true, or no quality section: an engine built alone), None for
    none (false), and where it is null, `quality.doubt_logprob` on an engine that detects
    `cheap`ly, else None."""
    if quality is None:
        return math.inf
    if not quality.enabled or quality.audio_language is False:
        return None
    if quality.audio_language:
        return math.inf
    return float(quality.doubt_logprob) if cheap else None


class InputPreparer(Protocol):
    """Turns a segment's audio into the engine's input in a CPU decode actor (picklable)."""

    def prepare(self, audio: np.ndarray, language: str | None, timestamps: bool = False) -> Any:
        """The engine input; raises ValueError for audio the model cannot take. `timestamps`:
        the input of a packed window, whose text is split back by time."""


class Engine(ABC):
    """An ASR engine. `transcribe` must return exactly one text per segment, in order.

    It may raise on a failed batch; the pipeline then retries smaller batches and finally records
    an error row per item, so an engine never has to invent a partial answer.
    """

    #: how many `transcribe` calls the engine can serve concurrently (continuous batching engines
    #: such as vLLM's take many; CPU engines one).
    max_concurrency: int = 1

    @classmethod
    def from_config(cls, engine_cfg: DictConfig, quality: DictConfig | None = None) -> Engine:
        """Build from the `engine` section (`quality` says which signals to ask the model
        for)."""
        return cls(engine_cfg)  # type: ignore[call-arg]

    @classmethod
    def check(cls, engine_cfg: DictConfig, packages: bool = True) -> None:
        """Cheap checks, before a run directory is frozen, that the engine can be built: its
        model is there and (with `packages`: it runs on this machine) its packages import.
        Raises EngineUnavailable with the fix; loads nothing."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The model identifier recorded in each output row."""

    @abstractmethod
    def transcribe(self, segments: list[Segment]) -> list[str]:
        """Texts for `segments`, one each, in order."""

    def hypotheses(self, segments: list[Segment]) -> list[Hypothesis]:
        """Like `transcribe`, with the model's own signals where the engine has them (the
        pipeline calls this; an engine without signals need not override it)."""
        return [Hypothesis(t) for t in self.transcribe(segments)]

    #: whether `hypotheses_packed` is implemented (short clips then share windows)
    supports_packing: bool = False

    @classmethod
    def packs(cls, engine_cfg: DictConfig) -> bool:
        """Whether an engine built from this config transcribes packed windows (asked before
        it is built, so that the decode actors know whether to pack)."""
        return cls.supports_packing

    @classmethod
    def checked_as(cls, engine_cfg: DictConfig) -> str:
        """The engine kind whose limits the config checks apply (a wrapper's: the wrapped
        engine's)."""
        return str(engine_cfg.kind)

    def hypotheses_packed(self, window: Segment, members: list[Member]
                          ) -> list[Hypothesis | None]:
        """Each member's text (and the model's signals where the engine has them) from one
        window holding several clips (asrd.audio.pack), split by the model's timestamps; None
        for a member whose words cannot be placed with confidence (the pipeline transcribes it
        again alone)."""
        raise NotImplementedError(f"{type(self).__name__} does not transcribe packed windows")

    def transcribe_packed(self, window: Segment, members: list[Member]) -> list[str | None]:
        """Like `hypotheses_packed`, the texts alone."""
        return [None if h is None else h.text for h in self.hypotheses_packed(window, members)]

    def hypotheses_windows(self, windows: list[PackedWindow]) -> list[list[Hypothesis | None]]:
        """`hypotheses_packed` for several windows; an engine that decodes a batch at once
        (or many requests concurrently) overrides it."""
        return [self.hypotheses_packed(w.segment, list(w.members)) for w in windows]

    def input_preparer(self) -> InputPreparer | None:
        """What the decode actors should run to prepare this engine's inputs, or None (raw audio).

        A GPU engine whose own process is the limit hands the CPU-heavy part of its input
        preparation to the decode actors, which scale with the node's CPUs."""
        return None

    def close(self) -> None:
        """Release the model (GPU memory, worker processes). Called once at task end."""

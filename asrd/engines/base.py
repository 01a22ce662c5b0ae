"""The one interface every ASR engine implements: a batch of 16 kHz mono segments in, texts out.

The pipeline owns batching, retries and placement; an engine only turns audio into text. Engines
are created once per task (start-up can take a minute on a GPU) and reused for all its shards.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


class EngineUnavailable(RuntimeError):
    """The engine cannot be built here (missing package or model); the message says how to fix it."""


@dataclass(frozen=True)
class Segment:
    """One model input: at most the engine's window (30 s), 16 kHz float32 mono."""

    audio: np.ndarray
    language: str | None = None  # per-item language from the index, overrides the config


class Engine(ABC):
    """An ASR engine. `transcribe` must return exactly one text per segment, in order.

    It may raise on a failed batch; the pipeline then retries smaller batches and finally records
    an error row per item, so an engine never has to invent a partial answer.
    """

    #: how many `transcribe` calls the engine can serve concurrently (continuous batching engines
    #: such as vLLM's take many; CPU engines one).
    max_concurrency: int = 1

    @property
    @abstractmethod
    def name(self) -> str:
        """The model identifier recorded in each output row."""

    @abstractmethod
    def transcribe(self, segments: list[Segment]) -> list[str]:
        """Texts for `segments`, one each, in order."""

    def close(self) -> None:
        """Release the model (GPU memory, worker processes). Called once at task end."""

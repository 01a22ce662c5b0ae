"""The typed records that travel between the stages of one task's runtime.

index row -> `WorkItem` (to a decode actor) -> `Decoded` + segment inputs (in Ray's object
store) -> `SegmentRef` (waiting for an engine) -> `Transcripts` (from an engine actor) ->
`RowResult` (a finished row: to the judge, then the writer).

Only `WorkItem`, `SegmentPick`, `Decoded` and `Transcripts` cross process boundaries; the index
row's passthrough columns never leave the driver.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from asrd.audio.pack import Member
from asrd.engines.base import Hypothesis, SpeakerTurn
from asrd.quality.signals import EngineSignals


@dataclass(frozen=True)
class IndexRow:
    """An index row as the runtime carries it: its number in the index, its id, and all its
    columns (passed through to its output row). Made once, where the shard's rows are read."""

    row: int
    id: str
    columns: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, columns: dict[str, Any]) -> IndexRow:
        return cls(columns["row"], str(columns.get("id")), columns)

    @property
    def duration_s(self) -> float | None:
        """The length the index gives (None where it gives none)."""
        d = self.columns.get("duration_s")
        return float(d) if isinstance(d, (int, float)) else None

    @property
    def language(self) -> str | None:
        """The language the index gives (a missing value reads as NaN or None there)."""
        lang = self.columns.get("language")
        return lang if isinstance(lang, str) else None


@dataclass(frozen=True)
class WorkItem:
    """What a decode actor needs of an index row: where its audio is, and its language."""

    row: int
    id: str
    path: str | None = None
    audio: bytes | None = None
    language: str | None = None

    pack: bool = True  # may share a window with other short clips
    max_segment_s: float | None = None  # None: audio.max_segment_s (shorter on a second try)

    @classmethod
    def of(cls, index_row: IndexRow, pack: bool = True,
           max_segment_s: float | None = None) -> WorkItem:
        return cls(row=index_row.row, id=index_row.id, path=index_row.columns.get("path"),
                   audio=index_row.columns.get("audio"), language=index_row.language, pack=pack,
                   max_segment_s=max_segment_s)


@dataclass
class Decoded:
    """What a decode actor reports of one item, or of one piece of a long recording decoded as a
    stream; its segments travel beside it, in the object store, as a list (arrays, or engine
    inputs when the decode actors prepare them; None for a segment whose committed text stands).
    """

    row: int
    error: str | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)  # seconds in the recording
    first: int = 0  # the row's index of the first of these segments
    last: bool = True  # no segment of the row follows these
    reused: list[int] = field(default_factory=list)  # segments not sent: their text is committed
    duration_s: float | None = None  # (of a stream: on its last piece)
    speech_s: float | None = None  # seconds of detected speech
    decode_s: float = 0.0
    window: list[Member] | None = None  # a packed window's members, on its first member
    packed_into: int | None = None  # the row whose segment holds this row's clip


@dataclass(frozen=True)
class SegmentRef:
    """One segment waiting for, or in, an engine call (driver side)."""

    chunk: ray.ObjectRef  # the decode call's segment inputs, one list per item
    item: int  # the item's position in that decode call
    seg: int  # the segment's position in the item's list
    row: int
    id: str
    language: str | None
    members: tuple[Member, ...] | None = None  # a packed window's clips (this row first)
    first: int = 0  # the row's index of the item's first segment (a piece of a stream)
    seconds: float = 0.0  # the segment's length (of the row's own clip, for a packed window)

    @property
    def index(self) -> int:
        """The segment's position in its row."""
        return self.first + self.seg

    @property
    def audio_s(self) -> float:
        """The audio an engine transcribes for it (a packed window: up to its last clip's end):
        the measure by which engine calls are balanced."""
        if self.members:
            return max(m.offset_s + m.length_s for m in self.members)
        return self.seconds


@dataclass(frozen=True)
class SegmentPick:
    """One segment of an engine call (engine side): which chunk, item and segment to read."""

    chunk: int  # position in the call's list of chunk references
    item: int
    seg: int
    id: str
    language: str | None
    members: tuple[Member, ...] | None = None


@dataclass(frozen=True)
class Transcripts:
    """An engine call's answer: per picked segment, in order, its hypothesis (or, for a packed
    window, each member's, None where it could not be placed), and the call's engine time."""

    texts: list[Hypothesis | list[Hypothesis | None]]
    took_s: float


@dataclass(frozen=True)
class SegmentText:
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass
class RowResult:
    """A finished row, ok or with an error, on its way to the judge and the writer."""

    index_row: IndexRow
    error: str | None = None
    text: str | None = None
    segments: list[SegmentText] | None = None
    speaker_turns: list[SpeakerTurn] | None = None  # a diarising model's, in the recording's time
    duration_s: float | None = None
    speech_s: float | None = None
    decode_s: float | None = None
    engine_s: float | None = None
    pack_window: str | None = None  # the id of the row whose window this row was packed into
    pack_offset_s: float | None = None  # where its clip starts in that window
    score: float | None = None
    judge_error: str | None = None
    engine_signals: EngineSignals | None = None  # what the model said of the row's segments
    quality: dict[str, Any] | None = None  # the signal columns and flags (asrd.quality)
    routed_language: str | None = None  # the language-ID pass's language for the row

    @property
    def language(self) -> str | None:
        """The language the row was transcribed in, where known: the index's, else the one
        the language-ID pass routed it to."""
        return self.index_row.language or self.routed_language

    @property
    def ok(self) -> bool:
        return self.error is None

    def output(self, model: str, engine: str, judged: bool) -> dict[str, Any]:
        """The output row (see asrd.schema): passthrough columns, then this row's results."""
        out = {k: v for k, v in self.index_row.columns.items() if k != "audio"}
        if self.routed_language and not self.index_row.language:
            out["language"] = self.routed_language
        out.update(model=model, engine=engine, text=self.text, error=self.error,
                   segments=None if self.segments is None else [
                       {"start": s.start, "end": s.end, "text": s.text,
                        "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob}
                       for s in self.segments],
                   speaker_turns=None if self.speaker_turns is None else [
                       asdict(t) for t in self.speaker_turns],
                   duration_s=self.duration_s or self.index_row.columns.get("duration_s"),
                   speech_s=self.speech_s, decode_s=self.decode_s, engine_s=self.engine_s,
                   pack_window=self.pack_window, pack_offset_s=self.pack_offset_s)
        if judged:
            out.update(score=self.score, judge_error=self.judge_error)
        out.update(self.quality or {})
        return out

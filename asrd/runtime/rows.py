"""Row assembly: a row is finished when every one of its segments has a text, or as soon as one
of them fails (the row is then an error row, and its other segments' texts are dropped).

Every index row handed to the decode stage leaves here exactly once, as one `RowResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asrd.engines.base import Hypothesis, SpeakerTurn
from asrd.quality.signals import EngineSignals, combine
from asrd.runtime.records import Decoded, IndexRow, RowResult, SegmentText


@dataclass
class _Pending:
    index_row: IndexRow
    decoded: Decoded  # the first record (a stream's totals come with its last piece)
    spans: list[tuple[float, float]]
    texts: list[Hypothesis | None]
    left: int  # segments without a text yet
    complete: bool  # every segment of the row is known
    engine_s: float = 0.0
    decode_s: float = 0.0
    window: tuple[str, float] | None = None

    @property
    def finished(self) -> bool:
        return self.complete and self.left == 0


@dataclass
class RowAssembly:
    """Rows waiting for their segments' texts (a long recording's segments arrive in pieces)."""

    pending: dict[int, _Pending] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, row: int) -> bool:
        return row in self.pending

    def start(self, index_row: IndexRow, decoded: Decoded) -> RowResult | None:
        """A decoded row (or a stream's first piece): finished at once when it failed or has no
        segments (no speech: an ok row with empty text), else pending."""
        self.pending.pop(decoded.row, None)
        if decoded.error is not None:
            return self.failed(index_row, decoded.error, decoded)
        n = len(decoded.spans)
        p = _Pending(index_row, decoded, list(decoded.spans), [None] * n, n, decoded.last,
                     decode_s=decoded.decode_s)
        if p.finished:
            return self._ok(p)
        self.pending[decoded.row] = p
        return None

    def more(self, decoded: Decoded) -> RowResult | None:
        """A later piece of a stream; the row's result when it failed, or had no segment left."""
        p = self.pending.get(decoded.row)
        if p is None:  # the row already failed
            return None
        p.decode_s += decoded.decode_s
        if decoded.error is not None:
            self.pending.pop(decoded.row)
            return self.failed(p.index_row, decoded.error, p.decoded)
        n = len(decoded.spans)
        p.spans += decoded.spans
        p.texts += [None] * n
        p.left += n
        if decoded.last:
            p.complete = True
            p.decoded.duration_s, p.decoded.speech_s = decoded.duration_s, decoded.speech_s
        return self._ok(self.pending.pop(decoded.row)) if p.finished else None

    def span(self, row: int, seg: int) -> tuple[float, float]:
        return self.pending[row].spans[seg]

    def text(self, row: int, seg: int, text: Hypothesis, engine_s: float,
             window: tuple[str, float] | None = None) -> RowResult | None:
        """One segment's hypothesis (`window`: the packed window's id and this clip's offset
        in it); the row's result when that was its last segment."""
        p = self.pending.get(row)
        if p is None:  # the row already failed through another segment
            return None
        p.window = window
        p.texts[seg] = text
        p.engine_s += engine_s
        p.left -= 1
        return self._ok(self.pending.pop(row)) if p.finished else None

    def index_row(self, row: int) -> IndexRow | None:
        p = self.pending.get(row)
        return p.index_row if p else None

    def fail(self, row: int, error: str) -> RowResult | None:
        """A segment failed for good: its row is an error row (once)."""
        p = self.pending.pop(row, None)
        return None if p is None else self.failed(p.index_row, error, p.decoded)

    @staticmethod
    def failed(index_row: IndexRow, error: str, decoded: Decoded | None = None
               ) -> RowResult:
        return RowResult(index_row, error=error,
                         duration_s=decoded.duration_s if decoded else None,
                         speech_s=decoded.speech_s if decoded else None,
                         decode_s=decoded.decode_s if decoded else None)

    @staticmethod
    def _ok(p: _Pending) -> RowResult:
        hyps = [h or Hypothesis("") for h in p.texts]
        texts = [h.text.strip() for h in hyps]
        signals = [EngineSignals.of(h) for h in hyps]
        return RowResult(
            p.index_row, text=" ".join(t for t in texts if t),
            segments=[SegmentText(a, b, t, h.avg_logprob, h.no_speech_prob)
                      for (a, b), t, h in zip(p.spans, texts, hyps)],
            speaker_turns=_turns(hyps, p.spans),
            engine_signals=combine([(s, b - a, len(t)) for s, (a, b), t
                                    in zip(signals, p.spans, texts)]) if hyps else None,
            duration_s=p.decoded.duration_s, speech_s=p.decoded.speech_s,
            decode_s=p.decode_s, engine_s=p.engine_s,
            pack_window=p.window[0] if p.window else None,
            pack_offset_s=p.window[1] if p.window else None,
            routed_language=_routed(hyps, p.spans))


def _turns(hyps: list[Hypothesis], spans: list[tuple[float, float]]
           ) -> list[SpeakerTurn] | None:
    """A diarising model's turns on the row's time base: each input's shifted by that input's
    start, as `segments` carries times; a last turn the model left open ends where its input
    ends. None where the model gives no turns."""
    if all(h.speaker_turns is None for h in hyps):
        return None
    return [SpeakerTurn(t.speaker, a + t.start_s, b if t.end_s is None else a + t.end_s, t.text)
            for h, (a, b) in zip(hyps, spans) for t in h.speaker_turns or ()]


def _routed(hyps: list[Hypothesis], spans: list[tuple[float, float]]) -> str | None:
    """The language the language-ID pass gave most of a row's seconds (None: it gave none)."""
    seconds: dict[str, float] = {}
    for h, (a, b) in zip(hyps, spans):
        if h.routed_language:
            seconds[h.routed_language] = seconds.get(h.routed_language, 0.0) + (b - a)
    return max(seconds, key=seconds.__getitem__, default=None)

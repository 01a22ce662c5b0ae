"""The driver's side of the decode actors (asrd.runtime.decode_worker): which actor decodes what,
what is in flight, and what happens when an actor dies.

Failures cost rows, never the shard: an actor that dies is restarted by Ray, and the rows of its
lost calls are decoded again one at a time, alone on an actor, so that a file that kills its
decoder costs only its own row: after `pipeline.decode_retries` more tries it is the error row
`decode worker died`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError, RayTaskError

from asrd.runtime.health import ActorHealth
from asrd.runtime.metrics import percentile
from asrd.runtime.records import Decoded, IndexRow, SegmentRef, WorkItem


@dataclass
class OpenStream:
    """The driver's side of a long recording decoded as a stream: where its next piece starts,
    which actor holds it open, and which of its segments' texts are committed already."""

    index_row: IndexRow
    actor: int
    committed: dict[int, tuple[float, float]] = field(default_factory=dict)
    next: int = 0
    in_flight: bool = False

    @property
    def row(self) -> int:
        return self.index_row.row


@dataclass
class Suspect:
    """A row (or a stream's next piece) to decode again alone: its actor died."""

    index_row: IndexRow
    attempt: int
    stream: OpenStream | None = None


@dataclass
class DecodeCall:
    """A decode call in flight: which actor, its segments' reference, its rows, its attempt."""

    actor: int
    segments: ray.ObjectRef
    rows: list[IndexRow]
    attempt: int
    isolated: bool  # the only call on its actor: if the actor dies, this row killed it
    stream: OpenStream | None = None  # a piece of this stream


@dataclass
class DecodedRow:
    """A decode call's outcome for one index row: its record and its segments' references."""

    index_row: IndexRow
    decoded: Decoded
    segments: list[SegmentRef]


class DecodeStage:
    """The driver's side of the decode actors: submits chunks round-robin and keeps what is in
    flight. When an actor dies, every call queued on it dies too, so a dead call does not say
    which row killed it: its rows become suspects, decoded again one at a time, each alone on an
    actor that runs nothing else. Only a death there counts as that row's try, so a poison file
    costs its own row (after `retries` more tries) and never its neighbours'.

    Long recordings are streams: one piece in flight at a time, each on the actor that holds the
    stream open (at most one stream per actor); a piece lost with its actor is a suspect like a
    row, and its stream goes on from there on the actor that decoded it alone."""

    def __init__(self, actors: list[Any], preparer_refs: list[ray.ObjectRef],
                 max_in_flight: int, retries: int, work_item: Callable[[IndexRow], WorkItem]):
        """`work_item`: how to decode an index row (as planned, or as its second try says: the
        same way again when an actor dies on it)."""
        self.actors, self.preparer_refs, self.work_item = actors, preparer_refs, work_item
        self.max_in_flight, self.retries = max_in_flight, retries
        self.calls: dict[ray.ObjectRef, DecodeCall] = {}
        self.per_actor = [0] * len(actors)
        self.suspects: collections.deque[Suspect] = collections.deque()
        self.streams: dict[int, OpenStream] = {}
        self.health = ActorHealth(actors)
        self.isolating: int | None = None  # the actor kept free for the next suspect
        self.next_actor = 0
        self.decode_ms: collections.deque[float] = collections.deque(maxlen=2048)

    def _regular_actors(self) -> list[int]:
        return [k for k in range(len(self.actors)) if k != self.isolating and self.health.ok[k]]

    def has_room(self) -> bool:
        return len(self.calls) < self.max_in_flight and bool(self._regular_actors())

    def busy(self) -> bool:
        return bool(self.calls or self.suspects or self.health.pings or self.streams)

    def in_flight(self) -> list[ray.ObjectRef]:
        return list(self.calls) + list(self.health.pings)

    def submit(self, rows: list[IndexRow]) -> None:
        """Decode these rows together, on the next actor in turn."""
        # While a suspect runs alone on the only actor, a row sent back to be transcribed alone
        # still needs an actor: it shares that one (rare: a poison file and a packed row at once).
        actors = (self._regular_actors()
                  or [k for k in range(len(self.actors)) if self.health.ok[k]]
                  or list(range(len(self.actors))))
        self._call(actors[self.next_actor % len(actors)], rows, attempt=0, isolated=False)
        self.next_actor += 1

    # --- streams -------------------------------------------------------------------------------
    def can_open_stream(self) -> bool:
        return len(self.streams) < len(self.actors)

    def open_stream(self, index_row: IndexRow, committed: dict[int, tuple[float, float]]
                    ) -> None:
        """Start decoding a long recording as a stream (`committed`: spans of its segments whose
        text is committed already, by index)."""
        stream = OpenStream(index_row, actor=-1, committed=committed)
        self.streams[stream.row] = stream
        self.next_piece(stream)

    def waiting_stream(self) -> OpenStream | None:
        """An open stream whose next piece is not asked for yet."""
        return next((s for s in self.streams.values() if not s.in_flight), None)

    def drop_stream(self, row: int) -> None:
        """The row is finished (it failed elsewhere): ask for no more of it."""
        self.streams.pop(row, None)

    def next_piece(self, stream: OpenStream, isolated: bool = False, attempt: int = 0) -> None:
        """Ask for the stream's next piece, on the actor that holds it open where it can."""
        regular = self._regular_actors()
        if not isolated and stream.actor not in regular:  # its actor is busy isolating or down
            held = collections.Counter(s.actor for s in self.streams.values())
            stream.actor = min(regular or range(len(self.actors)), key=lambda k: held[k])
        records, segments = self.actors[stream.actor].stream.remote(
            WorkItem.of(stream.index_row, pack=False), stream.next, stream.committed,
            self.preparer_refs)
        self.calls[records] = DecodeCall(stream.actor, segments, [stream.index_row], attempt,
                                         isolated, stream)
        self.per_actor[stream.actor] += 1
        stream.in_flight = True

    # --- suspects ------------------------------------------------------------------------------
    def feed(self) -> None:
        """Decode the next suspect, alone, once an actor has drained and answers again."""
        self.health.feed()
        if not self.suspects or any(c.isolated for c in self.calls.values()):
            return
        if self.isolating is None:
            self.isolating = min(range(len(self.actors)), key=lambda k: self.per_actor[k])
        if self.per_actor[self.isolating] == 0 and self.health.ok[self.isolating]:
            suspect = self.suspects.popleft()
            if suspect.stream is None:
                self._call(self.isolating, [suspect.index_row], suspect.attempt, isolated=True)
            elif suspect.stream.row in self.streams:
                suspect.stream.actor = self.isolating
                self.next_piece(suspect.stream, isolated=True, attempt=suspect.attempt)
            elif not self.suspects:  # its row finished meanwhile: no call to isolate
                self.isolating = None

    def _call(self, k: int, rows: list[IndexRow], attempt: int, isolated: bool) -> None:
        items = [self.work_item(r) for r in rows]
        records, segments = self.actors[k].decode.remote(items, self.preparer_refs)
        self.calls[records] = DecodeCall(k, segments, rows, attempt, isolated)
        self.per_actor[k] += 1

    def complete(self, ref: ray.ObjectRef) -> list[DecodedRow]:
        """The rows of a finished call; none when its actor died and they became suspects (a
        suspect that used up its tries comes back with the error `decode worker died`)."""
        if ref in self.health.pings:
            self.health.complete(ref)
            return []
        call = self.calls.pop(ref)
        self.per_actor[call.actor] -= 1
        if call.isolated and not self.suspects:
            self.isolating = None
        if call.stream is not None:
            call.stream.in_flight = False
        try:
            records: list[Decoded] = ray.get(ref)
        except (RayActorError, RayTaskError) as e:
            self.health.failed(call.actor)
            if not call.isolated:
                self.suspects.extend(Suspect(r, call.attempt, call.stream) for r in call.rows)
                if call.stream is not None:
                    call.stream.in_flight = True  # asked for again as a suspect
                return []
            (row,) = call.rows
            if call.attempt >= self.retries:
                error = f"decode worker died: {type(e).__name__}"
                first = call.stream.next if call.stream else 0
                if call.stream is not None:
                    self.streams.pop(call.stream.row, None)
                return [DecodedRow(row, Decoded(row.row, error, first=first), [])]
            self.suspects.appendleft(Suspect(row, call.attempt + 1, call.stream))
            if call.stream is not None:
                call.stream.in_flight = True
            self.isolating = call.actor
            return []
        self.decode_ms.extend(r.decode_s * 1000 for r in records)
        if call.stream is not None:
            return self._piece_done(call, records[0])
        out = []
        for i, (row, rec) in enumerate(zip(call.rows, records)):
            n = 0 if rec.error is not None or rec.packed_into is not None else len(rec.spans)
            members = tuple(rec.window) if rec.window else None
            refs = [SegmentRef(call.segments, i, s, row.row, row.id, row.language, members,
                               seconds=rec.spans[s][1] - rec.spans[s][0]) for s in range(n)]
            out.append(DecodedRow(row, rec, refs))
        return out

    def _piece_done(self, call: DecodeCall, rec: Decoded) -> list[DecodedRow]:
        stream = call.stream
        assert stream is not None
        if stream.row not in self.streams:  # dropped while this piece was on its way
            return []
        if rec.error is not None or rec.last:
            del self.streams[stream.row]
        else:
            stream.next = rec.first + len(rec.spans)
        row = stream.index_row
        reused = set(rec.reused)
        refs = [SegmentRef(call.segments, 0, s, row.row, row.id, row.language,
                           first=rec.first, seconds=rec.spans[s][1] - rec.spans[s][0])
                for s in range(len(rec.spans)) if rec.first + s not in reused]
        return [DecodedRow(row, rec, refs)]

    def counters(self) -> dict[str, float]:
        return {"latency/decode_ms_p50": percentile(self.decode_ms, 50),
                "latency/decode_ms_p90": percentile(self.decode_ms, 90),
                "queue/decode": len(self.calls)}

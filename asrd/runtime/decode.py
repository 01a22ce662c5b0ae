"""The decode stage: CPU actors that read, decode, resample and segment audio by speech (and, where
the engine hands out an input preparer, turn each segment into the engine's input).

A decode call returns two objects: small `Decoded` records, which the driver reads, and the
segment inputs, which stay in Ray's object store until an engine actor maps them (the driver
never touches audio samples).

A long recording (longer than `pipeline.stream_min_s` by the index) is not decoded in one call:
its actor holds it open as a `SegmentStream` and each call returns its next few segments, so the
actor holds about a window of it and the object store a few pieces, however long it is. A call
that finds no open stream (its actor restarted, or another actor takes over) decodes the
recording again from the start and skips to the piece asked for; segments whose text is already
committed (asrd.runtime.partial) are cut but not sent.

Failures cost rows, never the shard: bad audio is an error row; an actor that dies is restarted by
Ray, and the rows of its lost calls are decoded again one at a time, alone on an actor, so that a
file that kills its decoder costs only its own row: after `pipeline.decode_retries` more tries it
is the error row `decode worker died`.
"""

from __future__ import annotations

import collections
import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import ray
from omegaconf import DictConfig, OmegaConf
from ray.exceptions import RayActorError, RayTaskError

from asrd.audio import AudioError, VadSettings, decode, segment
from asrd.audio.pack import Member, PackSettings, build_window, plan_windows
from asrd.audio.cache import AudioCache
from asrd.audio.segment import Cut, SegmentStream
from asrd.engines import InputPreparer
from asrd.runtime.health import ActorHealth
from asrd.runtime.records import Decoded, SegmentRef, WorkItem
from asrd.testing.faults import decode_fault, stream_fault

PIECE_SEGMENTS = 4  # segments per call of a streamed recording (at most 2 min of 16 kHz audio)
OPEN_STREAMS = 2  # streams an actor keeps open (one in use; an abandoned one is dropped)


@dataclass
class _OpenStream:
    """A recording being decoded as a stream, in an actor."""

    stream: SegmentStream
    cuts: Iterator[Cut]
    next: int = 0  # the index of the next segment it cuts


class DecodeWorker:
    """One CPU: decodes chunks of work items into segments (or prepared engine inputs)."""

    def __init__(self, audio_cfg: dict, cache_cfg: dict, faults_cfg: dict, preload: list[str]):
        self.audio = audio_cfg
        vad = dict(audio_cfg["vad"])
        self.vad = VadSettings(**{k: v for k, v in vad.items() if k != "enabled"}) \
            if vad.pop("enabled") else None
        pack = dict(audio_cfg["pack"])
        self.pack = PackSettings(window_s=audio_cfg["max_segment_s"],
                                 **{k: v for k, v in pack.items() if k != "enabled"}) \
            if pack.pop("enabled") else None
        self.cache = AudioCache.from_config(OmegaConf.create(cache_cfg))
        self.faults = OmegaConf.create(faults_cfg)
        self.streams: collections.OrderedDict[int, _OpenStream] = collections.OrderedDict()
        self.preparer: InputPreparer | None = None
        self.preparer_ref: ray.ObjectRef | None = None
        # Imports for the preparer run while the engines start (a decode call waits for them).
        threading.Thread(target=lambda: [importlib.import_module(m) for m in preload],
                         daemon=True).start()

    def _use_preparer(self, refs: list[ray.ObjectRef]) -> None:
        """The preparer travels by reference with every call, so a restarted actor has it too."""
        ref = refs[0] if refs else None
        if ref != self.preparer_ref:
            self.preparer, self.preparer_ref = (ray.get(ref) if ref else None), ref

    def _source(self, item: WorkItem) -> str | bytes:
        if item.audio is not None:
            return item.audio
        if not item.path:
            raise AudioError("missing file", "the index row names no audio")
        return self.cache.local_path(item.path) if self.cache else item.path

    def _decode_one(self, item: WorkItem) -> tuple[Decoded, list[Any]]:
        t0 = time.perf_counter()
        decode_fault(self.faults, item.id)
        sr = self.audio["sample_rate"]
        out = Decoded(item.row)
        segments: list[Any] = []
        for attempt in range(self.audio["read_retries"] + 1):
            try:
                x = decode(self._source(item), sr, self.audio["max_duration_s"])
                cut = segment(x, sr, item.max_segment_s or self.audio["max_segment_s"], self.vad)
                segments = [x[a:b] for a, b in cut.spans]
                out.duration_s, out.speech_s = len(x) / sr, cut.speech_s
                out.spans = [(a / sr, b / sr) for a, b in cut.spans]
                out.error = None
                break
            except AudioError as e:
                out.error = str(e)
                if e.reason != "unreadable" or attempt == self.audio["read_retries"]:
                    break
            except Exception as e:  # a decoder bug must cost one row, not the shard
                out.error = f"decode error: {type(e).__name__}: {e}"
                break
        if out.error:
            segments, out.spans = [], []
        out.decode_s = time.perf_counter() - t0
        return out, segments

    def _prepare(self, item: WorkItem, out: Decoded, segments: list[Any]) -> list[Any]:
        """The engine's inputs of an item's segments (where the engine hands out a preparer)."""
        if not segments or self.preparer is None:
            return segments
        t0 = time.perf_counter()
        try:
            return [None if s is None else
                    self.preparer.prepare(s, item.language, timestamps=out.window is not None)
                    for s in segments]
        except Exception as e:  # audio the model cannot take costs its row, not the shard
            out.error = f"engine input error: {type(e).__name__}: {e}"
            return []
        finally:
            out.decode_s += time.perf_counter() - t0

    def _pack(self, items: list[WorkItem], decoded: list[tuple[Decoded, list[Any]]]) -> None:
        """Short one-segment items of this chunk into shared windows: the first member carries
        the window as its only segment, the others point at it."""
        sr = self.audio["sample_rate"]
        lengths = [len(segs[0]) / sr if it.pack and d.error is None and len(segs) == 1 else None
                   for it, (d, segs) in zip(items, decoded)]
        for group in plan_windows(lengths, self.pack):
            window, offsets = build_window([decoded[i][1][0] for i in group], sr,
                                           self.pack.gap_s)
            members = [Member(items[i].row, items[i].id, off, lengths[i] or 0.0)
                       for i, off in zip(group, offsets)]
            lead = decoded[group[0]][0]
            decoded[group[0]] = (lead, [window])
            lead.window = members
            for i in group[1:]:
                decoded[i][0].packed_into = lead.row
                decoded[i][1].clear()

    @ray.method(num_returns=2)
    def decode(self, items: list[WorkItem], preparer: list[ray.ObjectRef]
               ) -> tuple[list[Decoded], list[list[Any]]]:
        """A record per item, and its segments (arrays, or engine inputs when preparing)."""
        try:
            self._use_preparer(preparer)
        except Exception as e:  # say why, rather than look like a dead actor
            why = (str(e).strip().splitlines() or [""])[-1][:300]
            error = f"engine input error: cannot load the engine's input preparer: {why}"
            return [Decoded(it.row, error) for it in items], [[] for _ in items]
        out = [self._decode_one(it) for it in items]
        if self.pack is not None:
            self._pack(items, out)
        inputs = [self._prepare(it, d, s) for it, (d, s) in zip(items, out)]
        failed = {d.row: d.error for d, _ in out if d.window and d.error}
        for d, _ in out:  # a window its engine cannot take fails all of its clips, not just one
            if d.packed_into in failed:
                d.error, d.packed_into, d.spans = failed[d.packed_into], None, []
        return [d for d, _ in out], inputs

    @ray.method(num_returns=2)
    def stream(self, item: WorkItem, first: int, committed: dict[int, tuple[float, float]],
               preparer: list[ray.ObjectRef]) -> tuple[list[Decoded], list[list[Any]]]:
        """The next piece of a long recording: up to `PIECE_SEGMENTS` segments from its segment
        `first` on; `committed`: spans of segments whose text is committed (not sent again)."""
        try:
            self._use_preparer(preparer)
        except Exception as e:
            why = (str(e).strip().splitlines() or [""])[-1][:300]
            error = f"engine input error: cannot load the engine's input preparer: {why}"
            return [Decoded(item.row, error, first=first)], [[]]
        out, segments = self._piece(item, first, committed)
        return [out], [self._prepare(item, out, segments)]

    def _piece(self, item: WorkItem, first: int, committed: dict[int, tuple[float, float]]
               ) -> tuple[Decoded, list[Any]]:
        t0 = time.perf_counter()
        decode_fault(self.faults, item.id)
        sr = self.audio["sample_rate"]
        out = Decoded(item.row, first=first, last=False)
        segments: list[Any] = []
        for attempt in range(self.audio["read_retries"] + 1):
            out.error = None
            try:
                opened = self._open(item, first)
                for cut in opened.cuts:
                    stream_fault(self.faults, item.id, cut.index)
                    opened.next = cut.index + 1
                    if cut.index < first:  # before the piece asked for: cut again, not sent
                        continue
                    span = (cut.start / sr, cut.end / sr)
                    out.spans.append(span)
                    if committed.get(cut.index) == span:
                        out.reused.append(cut.index)
                        segments.append(None)
                    else:
                        segments.append(cut.audio)
                    if len(out.spans) == PIECE_SEGMENTS:
                        break
                else:
                    out.last = True
                    out.duration_s, out.speech_s = opened.stream.duration_s, opened.stream.speech_s
                break
            except AudioError as e:
                out.error = str(e)
                if e.reason != "unreadable" or attempt == self.audio["read_retries"] or out.spans:
                    break
                self.streams.pop(item.row, None)
            except Exception as e:  # a decoder bug must cost one row, not the shard
                out.error = f"decode error: {type(e).__name__}: {e}"
                break
        if out.error or out.last:
            self.streams.pop(item.row, None)
        if out.error:
            segments, out.spans, out.reused, out.last = [], [], [], True
        out.decode_s = time.perf_counter() - t0
        return out, segments

    def _open(self, item: WorkItem, first: int) -> _OpenStream:
        """The item's open stream if it is where `first` is; else one opened from the start."""
        opened = self.streams.pop(item.row, None)
        if opened is None or opened.next != first:
            stream = SegmentStream(self._source(item), self.audio["sample_rate"],
                                   self.audio["max_segment_s"], self.vad,
                                   self.audio["max_duration_s"])
            opened = _OpenStream(stream, iter(stream))
        self.streams[item.row] = opened
        while len(self.streams) > OPEN_STREAMS:
            self.streams.popitem(last=False)
        return opened

    def ping(self) -> bool:
        return True


@dataclass
class OpenStream:
    """The driver's side of a long recording decoded as a stream: where its next piece starts,
    which actor holds it open, and which of its segments' texts are committed already."""

    index_row: dict[str, Any]
    actor: int
    committed: dict[int, tuple[float, float]] = field(default_factory=dict)
    next: int = 0
    in_flight: bool = False

    @property
    def row(self) -> int:
        return self.index_row["row"]


@dataclass
class Suspect:
    """A row (or a stream's next piece) to decode again alone: its actor died."""

    index_row: dict[str, Any]
    attempt: int
    stream: OpenStream | None = None


@dataclass
class DecodeCall:
    """A decode call in flight: which actor, its segments' reference, its rows, its attempt."""

    actor: int
    segments: ray.ObjectRef
    rows: list[dict[str, Any]]  # index rows (the driver keeps their passthrough columns)
    attempt: int
    isolated: bool  # the only call on its actor: if the actor dies, this row killed it
    stream: OpenStream | None = None  # a piece of this stream


@dataclass
class DecodedRow:
    """A decode call's outcome for one index row: its record and its segments' references."""

    index_row: dict[str, Any]
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
                 max_in_flight: int, retries: int):
        self.actors, self.preparer_refs = actors, preparer_refs
        self.max_in_flight, self.retries = max_in_flight, retries
        self.calls: dict[ray.ObjectRef, DecodeCall] = {}
        self.per_actor = [0] * len(actors)
        self.suspects: collections.deque[Suspect] = collections.deque()
        self.streams: dict[int, OpenStream] = {}
        self.health = ActorHealth(actors)
        self.isolating: int | None = None  # the actor kept free for the next suspect
        self.next_actor = 0
        # Rows sent back for a second decode, remembered so that a retry after an actor's
        # death decodes them the same way: unpacked, or cut shorter.
        self.unpacked: set[int] = set()
        self.shorter: dict[int, float] = {}

    def _regular_actors(self) -> list[int]:
        return [k for k in range(len(self.actors)) if k != self.isolating and self.health.ok[k]]

    def has_room(self) -> bool:
        return len(self.calls) < self.max_in_flight and bool(self._regular_actors())

    def busy(self) -> bool:
        return bool(self.calls or self.suspects or self.health.pings or self.streams)

    def in_flight(self) -> list[ray.ObjectRef]:
        return list(self.calls) + list(self.health.pings)

    def submit(self, rows: list[dict[str, Any]], pack: bool = True,
               max_segment_s: float | None = None) -> None:
        """`pack=False`: decode these rows to be transcribed alone (a row whose words could not
        be placed in its packed window); `max_segment_s`: cut them shorter (a second try)."""
        for r in rows:
            if not pack:
                self.unpacked.add(r["row"])
            if max_segment_s:
                self.shorter[r["row"]] = max_segment_s
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

    def open_stream(self, index_row: dict[str, Any], committed: dict[int, tuple[float, float]]
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

    def _call(self, k: int, rows: list[dict[str, Any]], attempt: int, isolated: bool) -> None:
        items = [WorkItem.of(r, pack=r["row"] not in self.unpacked,
                             max_segment_s=self.shorter.get(r["row"])) for r in rows]
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
                return [DecodedRow(row, Decoded(row["row"], error, first=first), [])]
            self.suspects.appendleft(Suspect(row, call.attempt + 1, call.stream))
            if call.stream is not None:
                call.stream.in_flight = True
            self.isolating = call.actor
            return []
        if call.stream is not None:
            return self._piece_done(call, records[0])
        out = []
        for i, (row, rec) in enumerate(zip(call.rows, records)):
            lang = WorkItem.of(row).language
            n = 0 if rec.error is not None or rec.packed_into is not None else len(rec.spans)
            members = tuple(rec.window) if rec.window else None
            refs = [SegmentRef(call.segments, i, s, row["row"], str(row.get("id")), lang, members,
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
        lang = WorkItem.of(row).language
        reused = set(rec.reused)
        refs = [SegmentRef(call.segments, 0, s, row["row"], str(row.get("id")), lang,
                           first=rec.first, seconds=rec.spans[s][1] - rec.spans[s][0])
                for s in range(len(rec.spans)) if rec.first + s not in reused]
        return [DecodedRow(row, rec, refs)]


def decode_actor_config(cfg: DictConfig) -> tuple[dict, dict, dict]:
    """What every decode actor is built from: the audio, store and fault hooks' sections."""
    return tuple(OmegaConf.to_container(cfg[k], resolve=True)  # type: ignore[return-value]
                 for k in ("audio", "store", "faults"))

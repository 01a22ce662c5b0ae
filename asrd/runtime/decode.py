"""The decode stage: CPU actors that read, decode, resample and segment audio by speech (and, where
the engine hands out an input preparer, turn each segment into the engine's input).

A decode call returns two objects: small `Decoded` records, which the driver reads, and the
segment inputs, which stay in Ray's object store until an engine actor maps them (the driver
never touches audio samples).

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
from dataclasses import dataclass
from typing import Any

import ray
from omegaconf import DictConfig, OmegaConf
from ray.exceptions import RayActorError, RayTaskError

from asrd.audio import AudioError, VadSettings, decode, segment
from asrd.audio.pack import Member, PackSettings, build_window, plan_windows
from asrd.audio.cache import AudioCache
from asrd.engines import InputPreparer
from asrd.runtime.health import ActorHealth
from asrd.runtime.records import Decoded, SegmentRef, WorkItem
from asrd.testing.faults import decode_fault


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
            return [self.preparer.prepare(s, item.language, timestamps=out.window is not None)
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

    def ping(self) -> bool:
        return True


@dataclass
class DecodeCall:
    """A decode call in flight: which actor, its segments' reference, its rows, its attempt."""

    actor: int
    segments: ray.ObjectRef
    rows: list[dict[str, Any]]  # index rows (the driver keeps their passthrough columns)
    attempt: int
    isolated: bool  # the only call on its actor: if the actor dies, this row killed it


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
    costs its own row (after `retries` more tries) and never its neighbours'."""

    def __init__(self, actors: list[Any], preparer_refs: list[ray.ObjectRef],
                 max_in_flight: int, retries: int):
        self.actors, self.preparer_refs = actors, preparer_refs
        self.max_in_flight, self.retries = max_in_flight, retries
        self.calls: dict[ray.ObjectRef, DecodeCall] = {}
        self.per_actor = [0] * len(actors)
        self.suspects: collections.deque[tuple[dict[str, Any], int]] = collections.deque()
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
        return bool(self.calls or self.suspects or self.health.pings)

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

    def feed(self) -> None:
        """Decode the next suspect, alone, once an actor has drained and answers again."""
        self.health.feed()
        if not self.suspects or any(c.isolated for c in self.calls.values()):
            return
        if self.isolating is None:
            self.isolating = min(range(len(self.actors)), key=lambda k: self.per_actor[k])
        if self.per_actor[self.isolating] == 0 and self.health.ok[self.isolating]:
            row, attempt = self.suspects.popleft()
            self._call(self.isolating, [row], attempt, isolated=True)

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
        try:
            records: list[Decoded] = ray.get(ref)
        except (RayActorError, RayTaskError) as e:
            self.health.failed(call.actor)
            if not call.isolated:
                self.suspects.extend((r, call.attempt) for r in call.rows)
                return []
            (row,) = call.rows
            if call.attempt >= self.retries:
                error = f"decode worker died: {type(e).__name__}"
                return [DecodedRow(row, Decoded(row["row"], error), [])]
            self.suspects.appendleft((row, call.attempt + 1))
            self.isolating = call.actor
            return []
        out = []
        for i, (row, rec) in enumerate(zip(call.rows, records)):
            lang = WorkItem.of(row).language
            n = 0 if rec.error is not None or rec.packed_into is not None else len(rec.spans)
            members = tuple(rec.window) if rec.window else None
            refs = [SegmentRef(call.segments, i, s, row["row"], str(row.get("id")), lang, members)
                    for s in range(n)]
            out.append(DecodedRow(row, rec, refs))
        return out


def decode_actor_config(cfg: DictConfig) -> tuple[dict, dict, dict]:
    """What every decode actor is built from: the audio, store and fault hooks' sections."""
    return tuple(OmegaConf.to_container(cfg[k], resolve=True)  # type: ignore[return-value]
                 for k in ("audio", "store", "faults"))

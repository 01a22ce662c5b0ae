"""The decode actors: CPU processes that read, decode, resample and segment audio by speech (and,
where the engine hands out an input preparer, turn each segment into the engine's input).

A decode call returns two objects: small `Decoded` records, which the driver reads, and the
segment inputs, which stay in Ray's object store until an engine actor maps them (the driver
never touches audio samples).

A long recording is not decoded in one call: the actor holds it open as a `SegmentStream` and
each call returns its next few segments, so the actor holds about a window of it and the object
store a few pieces, however long it is. A call that finds no open stream (the actor restarted,
or another actor takes over) decodes the recording again from the start and skips to the piece
asked for; segments whose text is already committed are cut but not sent.

Bad audio is an error record, never an exception: the driver's side (asrd.runtime.decode_stage)
handles actors that die.
"""

from __future__ import annotations

import collections
import importlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import ray
from omegaconf import DictConfig, OmegaConf

from asrd import hooks
from asrd.audio import AudioError, VadSettings, decode, segment
from asrd.audio.pack import Member, PackSettings, build_window, plan_windows
from asrd.audio.cache import AudioCache
from asrd.audio.source import audio_source
from asrd.audio.segment import Cut, SegmentStream
from asrd.engines import InputPreparer
from asrd.runtime.records import Decoded, WorkItem

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

    def __init__(self, audio_cfg: dict, cache_cfg: dict, faults_cfg: dict, packing: bool,
                 preload: list[str]):
        """`packing`: whether short clips share windows (`audio.pack.enabled`, where the engine
        can split a window back by time)."""
        self.audio = audio_cfg
        vad = dict(audio_cfg["vad"])
        self.vad = VadSettings(**{k: v for k, v in vad.items() if k != "enabled"}) \
            if vad.pop("enabled") else None
        pack = {k: v for k, v in audio_cfg["pack"].items() if k != "enabled"}
        self.pack = PackSettings(window_s=audio_cfg["max_segment_s"], **pack) if packing else None
        self.cache = AudioCache.from_config(OmegaConf.create(cache_cfg))
        hooks.configure(faults_cfg)  # the hook settings of this actor's process
        self.streams: collections.OrderedDict[int, _OpenStream] = collections.OrderedDict()
        self.preparer: InputPreparer | None = None
        self.preparer_ref: ray.ObjectRef | None = None
        # Imports for the preparer run while the engines start (a decode call waits for them).
        threading.Thread(target=lambda: [importlib.import_module(m) for m in preload],
                         daemon=True).start()

    def _use_preparer(self, refs: list[ray.ObjectRef]) -> str | None:
        """The preparer travels by reference with every call, so a restarted actor has it too;
        the error that every row of the call gets when it cannot be loaded."""
        ref = refs[0] if refs else None
        if ref == self.preparer_ref:
            return None
        try:
            self.preparer, self.preparer_ref = (ray.get(ref) if ref else None), ref
        except Exception as e:  # say why, rather than look like a dead actor
            why = (str(e).strip().splitlines() or [""])[-1][:300]
            return f"engine input error: cannot load the engine's input preparer: {why}"
        return None

    def _read(self, out: Decoded, read: Callable[[], list[Any]],
              again: Callable[[], bool] = lambda: True) -> list[Any]:
        """`read()` fills `out` and returns the segments. A file the store could not read is
        read again up to `audio.read_retries` times (while `again()` allows it); any other
        failure is the item's error: a decoder bug costs one row, not the shard."""
        for attempt in range(self.audio["read_retries"] + 1):
            out.error = None
            try:
                return read()
            except AudioError as e:
                out.error = str(e)
                if e.reason != "unreadable" or attempt == self.audio["read_retries"] \
                        or not again():
                    return []
            except Exception as e:
                out.error = f"decode error: {type(e).__name__}: {e}"
                return []
        return []

    def _source(self, item: WorkItem) -> str | bytes:
        if item.audio is not None:
            return item.audio
        if not item.path:
            raise AudioError("missing file", "the index row names no audio")
        return audio_source(item.path, self.cache)

    def _decode_one(self, item: WorkItem) -> tuple[Decoded, list[Any]]:
        t0 = time.perf_counter()
        hooks.at("decode.item", item_id=item.id)
        sr = self.audio["sample_rate"]
        out = Decoded(item.row)

        def read() -> list[Any]:
            x = decode(self._source(item), sr, self.audio["max_duration_s"])
            cut = segment(x, sr, item.max_segment_s or self.audio["max_segment_s"], self.vad)
            out.duration_s, out.speech_s = len(x) / sr, cut.speech_s
            out.spans = [(a / sr, b / sr) for a, b in cut.spans]
            return [x[a:b] for a, b in cut.spans]

        segments = self._read(out, read)
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
        if error := self._use_preparer(preparer):
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
        if error := self._use_preparer(preparer):
            return [Decoded(item.row, error, first=first)], [[]]
        out, segments = self._piece(item, first, committed)
        return [out], [self._prepare(item, out, segments)]

    def _piece(self, item: WorkItem, first: int, committed: dict[int, tuple[float, float]]
               ) -> tuple[Decoded, list[Any]]:
        t0 = time.perf_counter()
        hooks.at("decode.item", item_id=item.id)
        sr = self.audio["sample_rate"]
        out = Decoded(item.row, first=first, last=False)

        def read() -> list[Any]:
            segments: list[Any] = []
            opened = self._open(item, first)
            for cut in opened.cuts:
                hooks.at("decode.segment", item_id=item.id, segment=cut.index)
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
                    return segments
            out.last = True
            out.duration_s, out.speech_s = opened.stream.duration_s, opened.stream.speech_s
            return segments

        def again() -> bool:  # only while nothing was cut: then from the start, reopened
            self.streams.pop(item.row, None)
            return not out.spans

        segments = self._read(out, read, again)
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


def decode_actor_config(cfg: DictConfig) -> tuple[dict, dict, dict]:
    """What every decode actor is built from: the audio, store and fault hooks' sections."""
    return tuple(OmegaConf.to_container(cfg[k], resolve=True)  # type: ignore[return-value]
                 for k in ("audio", "store", "faults"))

"""What a format writes: one item per merged row, or, for training windows, one per window.

Training windows (as distil-whisper trains on): the consecutive segments of a recording are
packed, in order, into windows of at most `window_s` seconds (from the first segment's start to
the last one's end); a window's label is its segments' texts joined, and also the same with
Whisper's timestamp tokens (`<|0.00|> text<|2.40|>`, seconds from the window's start, in steps
of 0.02 s), so a student learns timestamps too. A segment longer than the window cannot be
placed and is counted, not cut. A window's `speaker_turns` are the turns that start in it, in
seconds from its start, as its `segments` are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from asrd.export.source import FLAC_RATE, Clip, SourceRow, flac_bytes
from asrd.schema import SEGMENT_TYPE, SPEAKER_TURN_TYPE

TIMESTAMP_STEP_S = 0.02  # Whisper's timestamp resolution

# A window replaces these columns of its recording; the others (model, score, language, ...)
# describe the recording it was cut from and travel with it.
WINDOW_REPLACES = ("id", "text", "segments", "speaker_turns", "duration_s", "speech_s",
                   "pack_window", "pack_offset_s")
WINDOW_FIELDS = [("id", pa.string()), ("source_id", pa.string()), ("start_s", pa.float64()),
                 ("end_s", pa.float64()), ("duration_s", pa.float64()), ("text", pa.string()),
                 ("text_timestamped", pa.string()), ("segments", pa.list_(SEGMENT_TYPE)),
                 ("speaker_turns", pa.list_(SPEAKER_TURN_TYPE))]


@dataclass
class ExportItem:
    id: str
    clip: Clip
    duration_s: float
    text: str
    columns: dict[str, Any]  # every column of the item (the merged row's, or the window's)


def row_item(row: SourceRow) -> ExportItem:
    c = row.columns
    assert row.clip is not None
    return ExportItem(c["id"], row.clip, float(c.get("duration_s") or 0.0), c.get("text") or "", c)


def window_schema(merged: pa.Schema) -> pa.Schema:
    own = {name for name, _ in WINDOW_FIELDS}
    rest = [f for f in merged if f.name not in WINDOW_REPLACES and f.name not in own]
    return pa.schema([pa.field(n, t) for n, t in WINDOW_FIELDS] + rest)


def _stamp(t: float) -> str:
    return f"<|{round(t / TIMESTAMP_STEP_S) * TIMESTAMP_STEP_S:.2f}|>"


def plan_training_windows(segments: list[dict[str, Any]], window_s: float
                          ) -> tuple[list[list[dict]], int]:
    """Consecutive segments grouped into windows of at most `window_s`; and how many segments
    were longer than a window on their own (left out)."""
    windows: list[list[dict]] = []
    too_long = 0
    for seg in sorted(segments, key=lambda s: s["start"]):
        if seg["end"] - seg["start"] > window_s:
            too_long += 1
            continue
        if windows and seg["end"] - windows[-1][0]["start"] <= window_s:
            windows[-1].append(seg)
        else:
            windows.append([seg])
    return windows, too_long


def window_items(row: SourceRow, window_s: float) -> tuple[list[ExportItem], int]:
    """The row's training windows (audio cut from its 16 kHz samples, FLAC); and the count of
    segments too long for a window."""
    assert row.samples is not None
    c = row.columns
    groups, too_long = plan_training_windows(c.get("segments") or [], window_s)
    keep = {k: v for k, v in c.items() if k not in WINDOW_REPLACES}
    items = []
    for k, segs in enumerate(groups):
        start, end = segs[0]["start"], segs[-1]["end"]
        cut = row.samples[int(round(start * FLAC_RATE)):int(round(end * FLAC_RATE))]
        rel = [{"start": s["start"] - start, "end": s["end"] - start, "text": s["text"].strip()}
               for s in segs]
        text = " ".join(s["text"] for s in rel if s["text"])
        stamped = "".join(f"{_stamp(s['start'])} {s['text']}{_stamp(s['end'])}" for s in rel)
        turns = c.get("speaker_turns")
        wid = f"{c['id']}#w{k:03d}"
        cols = {"id": wid, "source_id": c["id"], "start_s": start, "end_s": end,
                "duration_s": end - start, "text": text, "text_timestamped": stamped,
                "segments": rel, "speaker_turns": None if turns is None else [
                    {**t, "start_s": t["start_s"] - start, "end_s": t["end_s"] - start}
                    for t in turns if start <= t["start_s"] < end], **keep}
        items.append(ExportItem(wid, Clip(flac_bytes(cut), "flac", FLAC_RATE), end - start, text,
                                cols))
    return items, too_long

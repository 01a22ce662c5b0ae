"""All done-markers of a run at the cost of one directory scan, not one read per marker.

On a shared store every file read costs metadata round trips (about 4 per small file on JuiceFS,
bench/RESULTS.md), so reading 10k markers is 40k round trips: 15-20 s on this machine's loopback
metadata engine, minutes against a remote one (pitfall 11). A directory scan with its attributes is
a handful of round trips (JuiceFS answers readdir with attributes), so this keeps a summary file of
the markers already read, keyed by each marker's (inode, size, mtime): markers are committed by
rename, so a rewritten marker always has a new key. Each call scans, reads only markers that are
new or changed (in parallel threads, which hides latency), and rewrites the summary atomically
when something changed. The markers stay the truth: a missing, stale or corrupt summary only costs
the reads it would have saved.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.commit import write_bytes

SUMMARY_VERSION = 1


@dataclass(frozen=True)
class UnreadableMarker:
    """A marker file that is not a JSON object (garbage, a half-copied file): it proves nothing,
    so readers treat its shard as not done. Never cached: it is reread until it is replaced."""

    reason: str


class MarkerSummary:
    def __init__(self, folder: str | Path, summary_file: str | Path, suffix: str = ".json",
                 threads: int = 16):
        self.folder = Path(folder)
        self.summary_file = Path(summary_file)
        self.suffix = suffix
        self.threads = threads
        self.reads = 0  # marker files read by the last call (0 when the summary was current)

    def read_all(self) -> dict[str, Any]:
        """File name -> parsed marker (an UnreadableMarker where it does not parse), for every
        marker in the folder now."""
        present = self._scan()
        known = self._load()
        fresh = {n: e["marker"] for n, e in known.items() if e.get("key") == present.get(n)}
        todo = [n for n in present if n not in fresh]
        self.reads = len(todo)
        unreadable: dict[str, UnreadableMarker] = {}
        with ThreadPoolExecutor(max(1, min(self.threads, len(todo)))) as pool:
            for name, marker in zip(todo, pool.map(self._read, todo)):
                if isinstance(marker, UnreadableMarker):
                    unreadable[name] = marker
                elif marker is not None:
                    fresh[name] = marker
        if len(todo) > len(unreadable) or len(fresh) != len(known):
            self._save({n: {"key": present[n], "marker": m} for n, m in fresh.items()})
        out: dict[str, Any] = {**fresh, **unreadable}
        return {n: out[n] for n in sorted(out)}

    def _scan(self) -> dict[str, list[int]]:
        if not self.folder.is_dir():
            return {}
        out = {}
        with os.scandir(self.folder) as it:
            for e in it:
                if e.name.startswith(".") or not e.name.endswith(self.suffix):
                    continue
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                out[e.name] = [st.st_ino, st.st_size, st.st_mtime_ns]
        return out

    def _read(self, name: str) -> Any:
        try:
            marker = json.loads((self.folder / name).read_bytes())
        except FileNotFoundError:  # removed since the scan (a shard being redone)
            return None
        except ValueError as e:  # not JSON, or not UTF-8
            return UnreadableMarker(f"not valid JSON ({e})")
        if not isinstance(marker, dict):
            return UnreadableMarker(f"not a JSON object (a {type(marker).__name__})")
        return marker

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.summary_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != SUMMARY_VERSION:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def _save(self, entries: dict[str, Any]) -> None:
        try:
            blob = json.dumps({"version": SUMMARY_VERSION, "entries": entries}, separators=(",", ":"))
            write_bytes(self.summary_file, blob.encode())
        except OSError:  # a read-only view of the run (another user's): the answer is still right
            pass

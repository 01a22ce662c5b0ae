"""A node-local, size-capped, least-recently-used cache of audio files read from the shared store.

Re-runs, retries and requeues of a shard read the same audio again; on a shared store (JuiceFS,
NFS, Lustre) that is network traffic and metadata round trips the node's local disk can spare.
Off by default (`store.cache_dir`); point it at node-local disk ($SLURM_TMPDIR, /local, /scratch).

Several processes of one node (Ray decode actors, several tasks) share one cache directory:
- a file appears only by rename of a complete copy, so a reader never sees half a file;
- a striped per-file lock makes one process copy a file while the others wait and then hit;
- one cache-wide lock guards the bookkeeping (touch, insert, evict), which is short;
- eviction drops the least recently used files (mtime, set on each use, since atime is
  unreliable under noatime/relatime) down to 90 % of the cap, never one used in the last
  `grace_s` seconds, so a path just handed out is not removed before its reader opens it.
A source that cannot be read or copied is returned as is, so the decoder reports its usual error
reason and a full local disk only costs speed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from filelock import FileLock

log = logging.getLogger(__name__)

LOW_WATER = 0.9  # eviction frees down to this fraction of the cap, so it does not run on every miss
STALE_TMP_S = 3600.0  # a temp file this old belongs to a process that died mid-copy
STRIPES = 64  # per-file fill locks, by key; bounded so lock files do not pile up


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypassed: int = 0  # unreadable, too large, or the copy failed: served from the store
    bytes_copied: int = 0
    evicted: int = 0


class AudioCache:
    def __init__(self, cache_dir: str | Path, max_bytes: int, grace_s: float = 60.0):
        if max_bytes <= 0:
            raise ValueError(f"audio cache size must be > 0 bytes, got {max_bytes}")
        self.dir = Path(os.path.expandvars(os.path.expanduser(str(cache_dir))))
        self.max_bytes = int(max_bytes)
        self.grace_s = grace_s
        self.stats = CacheStats()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / ".locks").mkdir(exist_ok=True)
        self._lock = FileLock(self.dir / ".locks" / "cache.lock")
        self._usage_file = self.dir / ".usage"

    @classmethod
    def from_config(cls, store_cfg) -> Optional["AudioCache"]:
        """The cache `store.cache_dir` / `store.cache_gb` ask for, or None when it is off."""
        if not store_cfg.cache_dir:
            return None
        return cls(store_cfg.cache_dir, int(store_cfg.cache_gb * 1024**3))

    def local_path(self, src_path: str) -> str:
        """A node-local copy of `src_path` (copied on a miss), or `src_path` itself when it cannot
        be cached. Valid for at least `grace_s` seconds after the call."""
        try:
            st = os.stat(src_path)
        except OSError:
            self.stats.bypassed += 1
            return src_path
        if st.st_size > self.max_bytes or not os.path.isfile(src_path):
            self.stats.bypassed += 1
            return src_path
        final = self._entry(src_path, st)
        if self._touch(final):
            self.stats.hits += 1
            return str(final)
        with FileLock(self.dir / ".locks" / f"fill-{int(final.stem[:8], 16) % STRIPES:02d}.lock"):
            if self._touch(final):  # another process copied it while we waited
                self.stats.hits += 1
                return str(final)
            if not self._keep(final, lambda tmp: shutil.copyfile(src_path, tmp), src_path):
                return src_path
        self.stats.misses += 1
        self.stats.bytes_copied += st.st_size
        return str(final)

    def cached_bytes(self, locator: str, fetch: Callable[[], bytes]) -> bytes:
        """The bytes of a remote object or a tar member, named by `locator`: from the cache, or
        `fetch()`ed and kept. Keyed by the locator alone (a member's carries its offset and size;
        an object store's objects are not rewritten in place by the corpora this reads)."""
        key = hashlib.sha256(f"bytes\0{locator}".encode()).hexdigest()
        final = self.dir / key[:2] / key
        if self._touch(final):
            with contextlib.suppress(OSError):
                data = final.read_bytes()
                self.stats.hits += 1
                return data
        data = fetch()
        if len(data) > self.max_bytes:
            self.stats.bypassed += 1
            return data
        if not self._keep(final, lambda tmp: tmp.write_bytes(data), locator):
            return data
        self.stats.misses += 1
        self.stats.bytes_copied += len(data)
        return data

    def _keep(self, final: Path, write: Callable[[Path], object], what: str) -> bool:
        """Make entry `final` through a temporary file (`write(tmp)`) and count its bytes; False,
        with nothing left behind, where the cache cannot keep it (the caller serves `what` from
        its source)."""
        tmp = final.parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            final.parent.mkdir(exist_ok=True)
            write(tmp)
            with self._lock:
                os.replace(tmp, final)
                self._add_usage(os.stat(final).st_size)
        except OSError as e:
            log.warning("audio cache: serving %s from its source, keeping a copy failed: %s",
                        what, e)
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.stats.bypassed += 1
            return False
        return True

    def _entry(self, src_path: str, st: os.stat_result) -> Path:
        """Keyed by path, size and mtime: a source rewritten in place is a new entry."""
        key = hashlib.sha256(
            f"{os.path.realpath(src_path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
        suffix = Path(src_path).suffix.lower()[:16]  # kept so extension-sniffing decoders still work
        return self.dir / key[:2] / f"{key}{suffix}"

    def _touch(self, path: Path) -> bool:
        """Mark `path` used now; False if it is not cached. Under the cache lock, so it cannot
        interleave with an eviction that picked this file."""
        with self._lock:
            try:
                os.utime(path)
            except FileNotFoundError:
                return False
        return True

    # --- bookkeeping (caller holds self._lock) --------------------------------------------------
    def _add_usage(self, nbytes: int) -> None:
        try:
            usage = int(self._usage_file.read_text()) + nbytes
        except (OSError, ValueError):  # first use, or a crash between rename and write
            usage = self._scan()[0]
        if usage > self.max_bytes:
            usage = self._evict()
        self._usage_file.write_text(str(usage))

    def _scan(self) -> tuple[int, list[tuple[float, int, Path]]]:
        """Total bytes and (mtime, size, path) of every entry; removes stale temp files."""
        total, entries, now = 0, [], time.time()
        for sub in os.scandir(self.dir):
            if not sub.is_dir() or sub.name.startswith("."):
                continue
            for e in os.scandir(sub.path):
                try:
                    st = e.stat()
                except FileNotFoundError:
                    continue
                if e.name.startswith(".tmp-"):
                    if now - st.st_mtime > STALE_TMP_S:
                        with contextlib.suppress(OSError):
                            os.unlink(e.path)
                    continue
                total += st.st_size
                entries.append((st.st_mtime, st.st_size, Path(e.path)))
        return total, entries

    def _evict(self) -> int:
        total, entries = self._scan()
        target, cutoff = self.max_bytes * LOW_WATER, time.time() - self.grace_s
        for mtime, size, path in sorted(entries):
            if total <= target or mtime > cutoff:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                self.stats.evicted += 1
            total -= size
        return total

    def usage_bytes(self) -> int:
        with self._lock:
            return self._scan()[0]

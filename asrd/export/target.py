"""Where an export's files go: a local (or mounted) folder, or a prefix on S3-style object
storage (`s3://bucket/prefix`).

The export loop (writer.py) is the same for both; a target gives it the few operations it needs:
list the top-level names, read and write `export.json`, remove a name, and put a finished shard
file under its final name. Shard writers always write into a local folder (`staging`), since the
formats' own writers (datasets, webdataset, Lhotse) write files.

A local target is the folder itself: shards are written in `.shard-NNNNN.tmp/` inside it and
renamed into place, and `.export.lock` in it keeps a second export out.

An S3 target uploads each shard file first under `.shard-NNNNN.tmp/` below the prefix, then
moves it to its final key (a server-side copy, then the delete): an upload cut off midway (an
exception after part of the file went up completes pyarrow's multipart upload with what was
written) leaves at most a partial object under the temporary key, which the next export removes,
never one under a final name. Each upload is one stream of known length from a local file;
`pyarrow.fs.copy_files` is not used, since it ignores a failed upload's error (it surfaces only
in the stream's destructor). `export.json` is one PUT (an object appears whole or not at all).
Object storage has no locks, so the lock that keeps a second export of this run out of the
prefix is a file in the run directory's `claims/` (on the shared store, so it holds across
nodes); the local staging folder is named from the run and the URL, and emptied by the next
export to them.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterator

import pyarrow.fs as pafs

from asrd.audio.source import is_s3, s3_filesystem, s3_key
from hpc.commit import atomic_path
from hpc.markers import exclusive

PROGRESS = "export.json"
LOCK = ".export.lock"  # held while an export writes a local folder
# The export's own hidden names: a shard being written, a progress record being written
# (hpc.commit.tmp_name), the lock. They never make a folder foreign; the first two, left by a
# killed export, are removed by the next one.
LEFTOVER = re.compile(r"\.shard-\d{5,}\.tmp|\.export\.json\.tmp-\d+-[0-9a-f]{8}")
UPLOAD_CHUNK = 8 * 2**20


class ExportError(ValueError):
    """The export cannot run as asked; the message says why and what to do."""


def shard_tmp_name(shard: int) -> str:
    return f".shard-{shard:05d}.tmp"


class ExportTarget(ABC):
    """The export's folder or prefix; `location` names it in messages and in the summary."""

    location: str
    staging: Path  # the local folder shard writers write into (a `.shard-NNNNN.tmp/` each)
    max_shard_mb: float = math.inf

    @abstractmethod
    def check(self) -> None:
        """Refuse a target that cannot hold an export (a file; a bucket that is not there)."""

    @abstractmethod
    def names(self) -> list[str]:
        """The names directly in the folder or prefix (files and folders); [] if it is new."""

    @abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[bool]:
        """Held while this export writes the target; yields False if another export holds it."""

    @abstractmethod
    def read_progress(self) -> str | None:
        """`export.json`'s text, or None if there is none."""

    @abstractmethod
    def write_progress(self, text: str, written: Callable[[], None]) -> None:
        """Replace `export.json` with `text` at once; `written` runs when it is ready but not
        yet in place (a fault hook's point)."""

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether anything is under `name` in the target."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Remove `name` (a file or a whole folder) if it is there."""

    @abstractmethod
    def stage(self, shard: int, names: list[str]) -> None:
        """Make the files `names` of the shard's staging folder ready to be placed."""

    @abstractmethod
    def place(self, shard: int, name: str) -> None:
        """Put staged `name` under its final name (atomically for each file)."""

    @abstractmethod
    def unstage(self, shard: int) -> None:
        """Remove the shard's staging, once its names are placed."""

    @abstractmethod
    def clear_leftovers(self) -> None:
        """Remove what a killed export left besides the names it recorded (temporaries)."""

    def finish(self) -> None:
        """Remove what this export kept besides its recorded files, once it is complete."""

    @abstractmethod
    def dest(self, name: str) -> str:
        """Where `name` is once placed: an absolute path or an s3:// URL (what manifests that
        point at exported files, Lhotse's recordings, name)."""


class LocalTarget(ExportTarget):
    """A local or mounted folder; shards are staged inside it and renamed into place."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.location = str(folder)
        self.staging = folder

    def check(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise ExportError(f"{self.folder} is a file: name a folder to export into")

    def names(self) -> list[str]:
        return [p.name for p in self.folder.iterdir()] if self.folder.is_dir() else []

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with exclusive(self.folder / LOCK) as mine:
            yield mine

    def read_progress(self) -> str | None:
        path = self.folder / PROGRESS
        return path.read_text() if path.is_file() else None

    def write_progress(self, text: str, written: Callable[[], None]) -> None:
        with atomic_path(self.folder / PROGRESS) as tmp:
            tmp.write_text(text)
            written()

    def exists(self, name: str) -> bool:
        path = self.folder / name
        return path.exists() or path.is_symlink()

    def remove(self, name: str) -> None:
        path = self.folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def stage(self, shard: int, names: list[str]) -> None:
        pass  # the staging folder is in the target already

    def place(self, shard: int, name: str) -> None:
        os.replace(self.staging / shard_tmp_name(shard) / name, self.folder / name)

    def unstage(self, shard: int) -> None:
        shutil.rmtree(self.staging / shard_tmp_name(shard))

    def clear_leftovers(self) -> None:
        for name in self.names():
            if LEFTOVER.fullmatch(name):
                self.remove(name)

    def dest(self, name: str) -> str:
        return str((self.folder / name).resolve())


class S3Target(ExportTarget):
    """`s3://bucket/prefix`, through the S3 client configured from the environment
    (asrd.audio.source.s3_filesystem); shards are staged in a local folder, uploaded under a
    temporary key and moved to their final keys."""

    max_shard_mb = 5 * 1024  # S3's CopyObject copies objects up to 5 GiB

    def __init__(self, url: str, lock_path: Path, staging_root: Path | None = None):
        self.url = url.rstrip("/")
        self.location = self.url
        self.base = s3_key(self.url)  # bucket/prefix, as pyarrow names it
        self.bucket = self.base.split("/", 1)[0]
        self.lock_path = lock_path
        digest = hashlib.sha256(f"{lock_path}\0{self.url}".encode()).hexdigest()[:16]
        root = staging_root or Path(tempfile.gettempdir())
        self.staging = root / f"asrd-export-{digest}"

    @contextlib.contextmanager
    def _s3(self, what: str) -> Iterator[pafs.S3FileSystem]:
        """The file system, with its errors (no credentials, refused, unreachable) as one line
        naming the URL."""
        try:
            yield s3_filesystem()
        except FileNotFoundError:
            raise
        except OSError as e:
            msg = " ".join(str(e).split())
            raise ExportError(f"{what} {self.url} failed: {msg} (the S3 client takes its "
                              "endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY)") from None

    def _key(self, name: str) -> str:
        return f"{self.base}/{name}"

    def check(self) -> None:
        if not self.base or self.base.startswith("/") or "//" in self.base:
            raise ExportError(f"{self.url} is not an s3://bucket/prefix URL")
        with self._s3("reading") as fs:
            bucket = fs.get_file_info(self.bucket)
            top = fs.get_file_info(self.base) if self.base != self.bucket else None
        if bucket.type != pafs.FileType.Directory:
            raise ExportError(f"bucket {self.bucket} of {self.url} does not exist (or these "
                              "credentials cannot see it): create it, or name another")
        if top is not None and top.type == pafs.FileType.File:
            raise ExportError(f"{self.url} is an object: name a prefix to export into")

    def names(self) -> list[str]:
        with self._s3("listing") as fs:
            infos = fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return [info.base_name for info in infos]

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.lock_path) as mine:
            yield mine

    def read_progress(self) -> str | None:
        try:
            with self._s3("reading") as fs, fs.open_input_stream(self._key(PROGRESS)) as f:
                return f.read().decode()
        except FileNotFoundError:
            return None

    def write_progress(self, text: str, written: Callable[[], None]) -> None:
        written()
        with self._s3("writing") as fs, fs.open_output_stream(self._key(PROGRESS)) as f:
            f.write(text.encode())

    def _info(self, name: str) -> pafs.FileInfo:
        with self._s3("reading") as fs:
            return fs.get_file_info(self._key(name))

    def exists(self, name: str) -> bool:
        return self._info(name).type != pafs.FileType.NotFound

    def remove(self, name: str) -> None:
        """One DeleteObject per object, then each (empty) folder deepest first: pyarrow's
        `delete_dir` of a non-empty folder sends DeleteObjects, which the SDK sends with a CRC
        checksum where S3 servers other than AWS (the JuiceFS gateway, older MinIO) require
        Content-MD5 (HTTP 400 MissingContentMD5); a server with real folders (the JuiceFS
        gateway) keeps empty ones until they are deleted."""
        key = self._key(name)
        kind = self._info(name).type
        with self._s3("removing from") as fs:
            if kind == pafs.FileType.File:
                fs.delete_file(key)
            elif kind == pafs.FileType.Directory:
                below = fs.get_file_info(pafs.FileSelector(key, recursive=True))
                for info in below:
                    if info.type == pafs.FileType.File:
                        fs.delete_file(info.path)
                folders = [i.path for i in below if i.type == pafs.FileType.Directory]
                for folder in sorted(folders, key=lambda p: -p.count("/")) + [key]:
                    fs.delete_dir(folder)

    def _files(self, local: Path, name: str) -> list[tuple[Path, str]]:
        """(local file, name below the prefix) of `name`, a file or a folder."""
        if local.is_dir():
            return [(p, f"{name}/{p.relative_to(local).as_posix()}")
                    for p in sorted(local.rglob("*")) if p.is_file()]
        return [(local, name)]

    def stage(self, shard: int, names: list[str]) -> None:
        tmp = shard_tmp_name(shard)  # a killed export's were removed by clear_leftovers
        for name in names:
            for path, rel in self._files(self.staging / tmp / name, name):
                with path.open("rb") as src, self._s3("uploading to") as fs, \
                        fs.open_output_stream(self._key(f"{tmp}/{rel}")) as out:
                    shutil.copyfileobj(src, out, UPLOAD_CHUNK)

    def place(self, shard: int, name: str) -> None:
        tmp = shard_tmp_name(shard)
        for _, rel in self._files(self.staging / tmp / name, name):
            with self._s3("moving in") as fs:
                fs.move(self._key(f"{tmp}/{rel}"), self._key(rel))

    def unstage(self, shard: int) -> None:
        self.remove(shard_tmp_name(shard))
        shutil.rmtree(self.staging / shard_tmp_name(shard))

    def clear_leftovers(self) -> None:
        for name in self.names():
            if LEFTOVER.fullmatch(name):
                self.remove(name)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def finish(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def dest(self, name: str) -> str:
        return f"{self.url}/{name}"


def export_target(out: str | Path, run_dir: Path) -> ExportTarget:
    """The target `-o` names: an s3:// URL, else a folder (refused inside the run directory,
    whose folders asrd replaces)."""
    if isinstance(out, str) and is_s3(out):
        digest = hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:16]
        return S3Target(out, run_dir / "claims" / f"export-{digest}.lock")
    out = Path(out)
    if run_dir.resolve() in (out.resolve(), *out.resolve().parents):
        raise ExportError(f"{out} is inside the run directory {run_dir}, whose folders asrd "
                          "replaces (a merge replaces merged/): export into a folder outside it")
    return LocalTarget(out)

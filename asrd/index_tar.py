"""Tar shards as an index source: WebDataset's layout, on local disk, a mount or `s3://`.

A source is one `.tar`, a folder (or `s3://` prefix) of `.tar` files, or a brace pattern
(`shards/train-{000000..000099}.tar`, expanded by `braceexpand`, the library WebDataset uses).
Members follow WebDataset's key convention: a member's key is its name up to the first dot of its
base name, and consecutive members sharing a key are one sample. Every audio member becomes a row
whose `path` names the member by byte range (asrd.audio.source.TarMember), so decode reads it
without unpacking the tar; its id is the sample's key (`<key>.<ext>` where a sample has several
audio members), or the `id` field of the sample's `.json`. The `.json` fields pass through as
columns (its `text` as `reference`, as in a manifest), a `.txt` member is the `reference`.
A tar is read as a stream, front to back, so an `s3://` shard costs one GET per pass.
"""

from __future__ import annotations

import json
import os
import tarfile
from contextlib import contextmanager
from typing import Any, Iterator

from asrd.audio.source import TarMember, is_s3, s3_filesystem, s3_key

AUDIO_EXTENSIONS = {"wav", "flac", "mp3", "ogg", "opus", "m4a", "aac", "webm", "mka", "wma",
                    "aiff", "aif"}


STREAM_BUFFER = 8 << 20
TABLE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")  # sources that are not tar shards


class TarSourceError(ValueError):
    """The tar source cannot be listed or read at all."""


def is_tar_source(source: str) -> bool:
    """Whether `source` names tar shards: a `.tar`, a pattern of them, an `s3://` prefix, or a
    local folder holding `.tar` files at its top level."""
    if source.endswith(".tar") or ("{" in source and ".tar" in source):
        return True
    if is_s3(source):
        return not source.lower().endswith(TABLE_SUFFIXES)
    return os.path.isdir(source) and any(n.endswith(".tar") for n in os.listdir(source))


def tar_paths(source: str) -> list[str]:
    """The shards `source` names, in order."""
    if "{" in source:
        from braceexpand import braceexpand

        return [p if is_s3(p) else os.path.abspath(p) for p in braceexpand(source)]
    if source.endswith(".tar"):
        return [source if is_s3(source) else os.path.abspath(source)]
    if is_s3(source):
        import pyarrow.fs as pafs

        try:
            infos = s3_filesystem().get_file_info(
                pafs.FileSelector(s3_key(source).rstrip("/"), recursive=True))
        except OSError as e:
            raise TarSourceError(f"cannot list {source}: {e}") from None
        return sorted(f"s3://{i.path}" for i in infos if i.path.endswith(".tar"))
    return sorted(os.path.join(os.path.abspath(source), n) for n in os.listdir(source)
                  if n.endswith(".tar"))


@contextmanager
def _open_stream(path: str):
    if is_s3(path):
        # Buffered: tarfile reads 10 KiB at a time, and each unbuffered read is one GET.
        with s3_filesystem().open_input_stream(s3_key(path), compression=None,
                                               buffer_size=STREAM_BUFFER) as f:
            yield f
    else:
        with open(path, "rb") as f:
            yield f


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's (key, extension): the name up to the first dot of its base name."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower() if dot else ""


def tar_entries(source: str, with_audio: bool = True) -> Iterator[dict[str, Any]]:
    """One entry per audio member of every shard; `_bytes` holds its data when `with_audio`."""
    for path in tar_paths(source):
        yield from _shard_entries(path, with_audio)


def _shard_entries(path: str, with_audio: bool) -> Iterator[dict[str, Any]]:
    sample: list[tuple[str, str, tarfile.TarInfo, bytes | None]] = []
    key = None
    try:
        with _open_stream(path) as f, tarfile.open(fileobj=f, mode="r|") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                k, ext = _split_name(info.name)
                if k != key and sample:
                    yield from _sample_entries(path, sample)
                    sample = []
                key = k
                last = ext.rsplit(".", 1)[-1]
                wanted = last in ("json", "txt") or (with_audio and last in AUDIO_EXTENSIONS)
                data = tf.extractfile(info).read() if wanted else None
                sample.append((k, ext, info, data))
    except FileNotFoundError:
        raise TarSourceError(f"tar shard not found: {path}") from None
    except (tarfile.TarError, OSError) as e:
        raise TarSourceError(f"{path}: not a readable tar ({e})") from None
    if sample:
        yield from _sample_entries(path, sample)


def _sample_entries(path: str, sample: list[tuple[str, str, tarfile.TarInfo, bytes | None]]
                    ) -> Iterator[dict[str, Any]]:
    """The rows of one sample: its audio members, with its sidecar fields."""
    fields: dict[str, Any] = {}
    for _, ext, _, data in sample:
        if ext.endswith("json") and data is not None:
            try:
                meta = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TarSourceError(f"{path}: sample {sample[0][0]}: bad .{ext} ({e})") from None
            if isinstance(meta, dict):
                fields.update(meta)
        elif ext.endswith("txt") and data is not None:
            fields.setdefault("reference", data.decode("utf-8", errors="replace").strip())
    if "text" in fields and "reference" not in fields:  # as in a manifest: the label to compare
        fields["reference"] = fields.pop("text")
    audio = [(k, ext, info, data) for k, ext, info, data in sample
             if ext.rsplit(".", 1)[-1] in AUDIO_EXTENSIONS]
    given = fields.pop("id", None)
    if "path" in fields:  # the member is this row's audio; a sidecar's own path (an exported
        fields["source_path"] = fields.pop("path")  # row's source file) is kept beside it
    for key, ext, info, data in audio:
        ident = key if len(audio) == 1 else f"{key}.{ext}"
        if given is not None:
            ident = str(given) if len(audio) == 1 else f"{given}.{ext}"
        entry = {"id": ident, "path": TarMember(path, info.offset_data, info.size).locator()}
        if data is not None:
            entry["_bytes"] = data
        entry.update(fields)
        yield entry

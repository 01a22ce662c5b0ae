"""Where audio bytes come from: a local path, an `s3://` object, or one member of a tar shard.

A tar member is named in the index's `path` column as `<tar>#<offset>+<size>` (the tar's path or
URL, the byte offset of the member's data and its length), so a decode actor reads it by one
byte range without unpacking the tar, and the runtime carries it as any other path.

Object storage goes through `pyarrow.fs.S3FileSystem`: pyarrow is a dependency already (no second
S3 client to install and keep in step), it reads by byte range (`read_at`), retries with the AWS
SDK's standard strategy, and takes its credentials from the environment as every AWS tool does
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; the endpoint from AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL, for an S3 server other than AWS).

Uploads send a Content-Length. The AWS C++ SDK inside pyarrow's wheels computes request checksums
by default ("when supported") and so sends every PutObject and UploadPart body as
`aws-chunked` with `Transfer-Encoding: chunked` and a trailing checksum, without a
Content-Length; S3 servers other than AWS that predate that encoding (the JuiceFS gateway, older
MinIO, Ceph) refuse it with HTTP 411 Length Required. pyarrow has no option for it (neither
`allow_delayed_open` nor `background_writes` changes the encoding), but the SDK reads the
standard AWS setting AWS_REQUEST_CHECKSUM_CALCULATION when a client is made: it is set to
`when_required` (checksums only where the operation demands them, which neither upload does)
unless the environment already says otherwise. AWS S3 itself accepts both forms.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from asrd.audio.decode import AudioError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from asrd.audio.cache import AudioCache

CHECKSUM_SETTING = "AWS_REQUEST_CHECKSUM_CALCULATION"
MEMBER = re.compile(r"^(?P<tar>.+\.tar)#(?P<offset>\d+)\+(?P<size>\d+)$")
S3_RETRIES = 5


@dataclass(frozen=True)
class TarMember:
    """One member's data inside a tar shard: `size` bytes from `offset`."""

    tar: str
    offset: int
    size: int

    def locator(self) -> str:
        return f"{self.tar}#{self.offset}+{self.size}"


def tar_member(path: str) -> TarMember | None:
    """The member a `path` names, or None for a plain path."""
    m = MEMBER.match(path)
    return TarMember(m["tar"], int(m["offset"]), int(m["size"])) if m else None


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


@functools.cache
def s3_filesystem() -> pafs.S3FileSystem:
    """One client per process, configured from the environment (see the module's docstring)."""
    import pyarrow.fs as pafs

    os.environ.setdefault(CHECKSUM_SETTING, "when_required")  # read by the SDK's client config
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kw: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_RETRIES)}
    if endpoint:
        url = urlparse(endpoint)
        kw.update(endpoint_override=url.netloc or url.path, scheme=url.scheme or "https")
    if os.environ.get("AWS_REGION"):
        kw["region"] = os.environ["AWS_REGION"]
    return pafs.S3FileSystem(**kw)


def s3_key(url: str) -> str:
    """`bucket/key` of an `s3://bucket/key` URL (the form pyarrow's file system takes)."""
    return url[len("s3://"):]


def read_range(path: str, offset: int, size: int) -> bytes:
    """`size` bytes of `path` (local or s3://) from `offset`; a short read is an error, since
    it means the index no longer matches the file."""
    try:
        if is_s3(path):
            with s3_filesystem().open_input_file(s3_key(path)) as f:
                data = f.read_at(size, offset)
        else:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size)
    except FileNotFoundError:
        raise AudioError("missing file", path) from None
    except OSError as e:
        raise AudioError("unreadable", f"{path}: {e}") from None
    if len(data) != size:
        raise AudioError("unreadable", f"{path}: {len(data)} of {size} bytes at offset {offset}")
    return bytes(data)


def read_object(url: str) -> bytes:
    """A whole `s3://` object."""
    try:
        fs = s3_filesystem()
        with fs.open_input_stream(s3_key(url)) as f:
            return bytes(f.read())
    except FileNotFoundError:
        raise AudioError("missing file", url) from None
    except OSError as e:
        raise AudioError("unreadable", f"{url}: {e}") from None


def audio_source(path: str, cache: AudioCache | None = None) -> str | bytes:
    """What the decoder opens for an index `path`: a tar member's or an object's bytes (kept in
    the local cache where one is set), or the local path (through the cache where one is set)."""
    member = tar_member(path)
    if member is None and not is_s3(path):
        return cache.local_path(path) if cache else path
    if cache is not None:
        return cache.cached_bytes(path, lambda: _fetch(path, member))
    return _fetch(path, member)


def _fetch(path: str, member: TarMember | None) -> bytes:
    if member is not None:
        return read_range(member.tar, member.offset, member.size)
    return read_object(path)

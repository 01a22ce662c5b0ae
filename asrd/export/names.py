"""File names made from item ids: safe on every file system, and one per id.

An id is whatever the source gave (a path with slashes, any Unicode, hundreds of characters), so
it cannot be a file name as it is, and no reversible cleaning fits in a name either: `spk/a` and
`spk_a` would clean to the same name. A name is therefore a readable slug of the id (ASCII
letters, digits and inner `-`, `_` and dots, at most SLUG_CHARS) followed by the first HASH_HEX hex
digits of the id's SHA-256, which tells ids apart (a 64-bit hash: two ids of one shard share a
name with a chance of about 1 in 10^10 at 100,000 files). A name stays under 120 bytes, far
below the 255 that file systems allow.
"""

from __future__ import annotations

import hashlib
import re

SLUG_CHARS = 80
HASH_HEX = 16
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXT = re.compile(r"[a-z0-9]{1,10}")


def file_stem(item_id: str) -> str:
    """`<slug>-<hash>`: the slug for people, the hash for uniqueness."""
    digest = hashlib.sha256(item_id.encode("utf-8", errors="surrogatepass")).hexdigest()
    slug = _UNSAFE.sub("_", item_id)[:SLUG_CHARS].strip("._-")  # no hidden files, `..` or options
    return f"{slug}-{digest[:HASH_HEX]}" if slug else digest[:HASH_HEX]


def file_name(item_id: str, ext: str) -> str:
    return f"{file_stem(item_id)}.{ext}"


def safe_ext(ext: str) -> str | None:
    """`ext` lower-cased if it can end a file name and be a WebDataset field (letters and
    digits, no dot); None if not."""
    ext = ext.lower()
    return ext if _EXT.fullmatch(ext) else None

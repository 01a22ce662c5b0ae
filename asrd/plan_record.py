"""The plan as a record: the index it cut, the config it froze, and its shards as contiguous
index row ranges. What `plan.json` holds; read by everything that works on a planned run."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from asrd import __version__
from asrd.index_identity import IndexIdentity


@dataclass(frozen=True)
class ShardSpec:
    shard: int
    start: int  # first index row
    stop: int  # one past the last index row
    audio_s: float

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Plan:
    index: str
    index_rows: int
    index_fingerprint: str
    config_hash: str
    shards: list[ShardSpec]
    config_file_sha256: str = ""  # of the config.yaml frozen with this plan ("": planned before)
    # each index column's content hash (asrd.index_identity); {}: planned before they existed,
    # and `index_fingerprint` is then the index file's footer fingerprint
    index_columns: dict[str, str] = field(default_factory=dict)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def shard_key(self, shard: int) -> str:
        """What shard K means under this plan (the index's work columns, the config, its rows).
        Markers and parts carry it, so that a re-plan that changes a shard voids what was made
        for the old one, and keeps what still fits (a label column's edit changes no key)."""
        spec = self.shards[shard]
        blob = f"{self.index_fingerprint}:{self.config_hash}:{spec.start}:{spec.stop}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["asrd_version"] = __version__
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Plan":
        return cls(d["index"], d["index_rows"], d["index_fingerprint"], d["config_hash"],
                   [ShardSpec(**s) for s in d["shards"]], d.get("config_file_sha256", ""),
                   dict(d.get("index_columns") or {}))

    @property
    def identity(self) -> IndexIdentity | None:
        return IndexIdentity(self.index_rows, self.index_columns) if self.index_columns else None

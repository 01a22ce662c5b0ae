"""The merge's W&B run: totals, hours, failures by reason, throughput per shard and per host, and
a few transcripts with their audio for a quick listen.

Why: after a run the question is "how much came out, what failed, which node was slow, does it
sound right"; one job_type=merge run in the run's group answers it. Like task runs, it is never
worth a failed merge: if W&B cannot start, the merge is simply not logged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from asrd.tracking.console import say
from asrd.tracking.wandb_run import announce, finish, init, run_config, wandb_root

SAMPLE_RATE = 16000
SAMPLE_MAX_S = 30.0  # audio per sample row: enough for a quick listen, small to upload
SAMPLE_DECODE_MAX_S = 600.0  # longer files libsndfile cannot read get no sample audio


def merge_totals(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The merge summary as W&B summary values: scalars kept, other lists and dicts counted."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if k in ("failures_by_reason", "per_shard", "filter_counts"):
            continue
        if k == "quality" and isinstance(v, Mapping):  # what judged the rows, by name
            out.update({f"quality/{name}": value for name, value in _flat(v).items()})
            continue
        out[k] = len(v) if isinstance(v, (list, tuple, dict)) else v
    if "audio_hours" not in out and "audio_s" in out:
        out["audio_hours"] = float(out["audio_s"]) / 3600
    return out


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as "a/b" keys; lists as comma-joined text."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out


def log_merge(cfg: DictConfig, run_dir: Path, summary: Mapping[str, Any],
              per_shard: list[Mapping[str, Any]], samples: list[Mapping[str, Any]],
              figures: Mapping[str, bytes] | None = None,
              flagged: list[Mapping[str, Any]] | None = None) -> None:
    """One job_type=merge run: the summary's scalars (a list or dict other than the failures
    becomes its length), `audio_hours`, `failures/<reason>`, and tables `failures_by_reason`,
    `throughput_per_shard` (+ bar chart `audio_s_per_s_by_shard`), `throughput_per_host`,
    `samples` (transcripts with their audio) and, after `--filter`, `dropped_by_filter_clause`
    (rows each clause failed, as false and as null).

    summary: merge totals (e.g. rows, ok, failed, audio_hours or audio_s) and
    `failures_by_reason` (reason -> count). per_shard: one dict per merged shard (shard, host,
    rows, failed, audio_s, wall_s). samples: id, text, duration_s and `audio` (float32 16 kHz)
    or `path`. figures: the quality report's PNGs by name, logged as images `quality/<name>`;
    flagged: a sample of flagged rows, logged as the table `flagged_rows`; the rows each flag
    dropped are summary values `dropped_by_flag/<flag>`.
    """
    if cfg.wandb.mode == "disabled":
        return
    import wandb

    root = wandb_root(cfg, run_dir)
    totals = merge_totals(summary)
    failures = dict(summary.get("failures_by_reason") or {})
    with _staging_in(root / "wandb" / "data"):
        try:
            run = init(cfg, root, job_type="merge", name=f"{cfg.run.name}-merge",
                       config=run_config(cfg, {"shards": len(per_shard)}))
        except Exception as e:  # noqa: BLE001 - the merged output matters, not its W&B page
            say(f"W&B init failed for the merge run ({type(e).__name__}: {e}); not logged")
            return
        announce(run)
        rows = float(totals.get("rows") or 0)
        failure_table = wandb.Table(columns=["reason", "count", "fraction"], data=[
            [r, c, c / rows if rows else None]
            for r, c in sorted(failures.items(), key=lambda rc: -rc[1])])
        shard_table = wandb.Table(columns=[
            "shard", "host", "rows", "failed", "audio_s", "wall_s", "items_per_s",
            "audio_s_per_s", "rtf"], data=_shard_rows(per_shard))
        host_table = wandb.Table(columns=["host", "shards", "audio_s", "wall_s", "audio_s_per_s"],
                                 data=_host_rows(per_shard))
        sample_table = wandb.Table(columns=["id", "duration_s", "text", "audio"], data=[
            [str(s.get("id")), s.get("duration_s"), s.get("text"), _sample_audio(s)]
            for s in samples[: cfg.wandb.sample_rows]])
        tables = {"failures_by_reason": failure_table, "throughput_per_shard": shard_table,
                  "throughput_per_host": host_table, "samples": sample_table,
                  "audio_s_per_s_by_shard": wandb.plot.bar(
                      shard_table, "shard", "audio_s_per_s", title="audio s per s, by shard")}
        by_clause = (summary.get("filter_counts") or {}).get("dropped_by_clause") or {}
        if by_clause:
            tables["dropped_by_filter_clause"] = wandb.Table(
                columns=["clause", "false", "null"],
                data=[[c, n["false"], n["null"]] for c, n in by_clause.items()])
        run.log(tables)
        _log_quality(run, figures or {}, flagged or [])
        run.summary.update({**totals, **{f"failures/{r}": c for r, c in failures.items()},
                            **{f"dropped_by_flag/{f}": n for f, n in
                               (summary.get("dropped_by_flag") or {}).items()}})
        finish(run)


def _log_quality(run: Any, figures: Mapping[str, bytes], flagged: list[Mapping[str, Any]]
                 ) -> None:
    """The quality report's figures and flagged rows (asrd.report)."""
    import io

    import wandb
    from PIL import Image

    logged: dict[str, Any] = {f"quality/{name}": wandb.Image(Image.open(io.BytesIO(png)),
                                                              caption=name.replace("_", " "))
                              for name, png in figures.items()}
    if flagged:
        columns = list(flagged[0])
        logged["flagged_rows"] = wandb.Table(columns=columns, data=[
            [", ".join(v) if isinstance(v, list) else v for v in (r.get(c) for c in columns)]
            for r in flagged])
    if logged:
        run.log(logged)


@contextlib.contextmanager
def _staging_in(path: Path) -> Iterator[None]:
    """Keep W&B's media staging (tables, audio) next to the run, not in ~/.local/share, so that
    `wandb sync` of an offline merge run finds them from any node that sees the run dir."""
    old = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("WANDB_DATA_DIR", None)
        else:
            os.environ["WANDB_DATA_DIR"] = old


def _shard_rows(per_shard: list[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for s in sorted(per_shard, key=lambda s: s.get("shard", 0)):
        wall, audio, n = float(s.get("wall_s") or 0), float(s.get("audio_s") or 0), s.get("rows", 0)
        rows.append([s.get("shard"), s.get("host") or "", n, s.get("failed", 0), audio, wall,
                     n / wall if wall else None, audio / wall if wall else None,
                     wall / audio if audio else None])
    return rows


def _host_rows(per_shard: list[Mapping[str, Any]]) -> list[list[Any]]:
    hosts: dict[str, list[float]] = {}
    for s in per_shard:
        h = hosts.setdefault(str(s.get("host") or ""), [0, 0.0, 0.0])
        h[0] += 1
        h[1] += float(s.get("audio_s") or 0)
        h[2] += float(s.get("wall_s") or 0)
    return [[host, int(n), audio, wall, audio / wall if wall else None]
            for host, (n, audio, wall) in sorted(hosts.items())]


def _sample_audio(sample: Mapping[str, Any]) -> Any:
    """wandb.Audio of the sample's first SAMPLE_MAX_S seconds, mono, or None when its audio
    cannot be read (the row still shows its text)."""
    import numpy as np
    import wandb

    caption = str(sample.get("id", ""))
    audio = sample.get("audio")
    if audio is not None:
        arr = np.asarray(audio, dtype=np.float32)[: int(SAMPLE_MAX_S * SAMPLE_RATE)]
        return wandb.Audio(arr, sample_rate=SAMPLE_RATE, caption=caption)
    path = sample.get("path")
    if not path:
        return None
    try:
        arr, rate = _read_head(str(path))
    except Exception as e:  # noqa: BLE001 - a sample without audio still shows its text
        say(f"merge samples: cannot read {path} ({e}); row kept without audio")
        return None
    return wandb.Audio(arr, sample_rate=rate, caption=caption)


def _read_head(path: str) -> tuple[Any, int]:
    """The first SAMPLE_MAX_S seconds, mono, and their rate. libsndfile reads just those, at the
    file's rate (cheap even for a 3-hour file); other formats (m4a, ...) go through asrd's own
    decoder, which decodes whole files, so only files up to SAMPLE_DECODE_MAX_S."""
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            head = f.read(frames=int(SAMPLE_MAX_S * f.samplerate), dtype="float32",
                          always_2d=True)
            return head.mean(axis=1), f.samplerate
    except sf.LibsndfileError:
        from asrd.audio import decode

        audio = decode(path, SAMPLE_RATE, max_duration_s=SAMPLE_DECODE_MAX_S)
        return audio[: int(SAMPLE_MAX_S * SAMPLE_RATE)], SAMPLE_RATE

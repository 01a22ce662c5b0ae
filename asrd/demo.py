"""`asrd demo`, the README's main command: sample speech -> index -> every shard on this machine
(local executor, local store, CPU engine) -> merge (the default quality preset, and the quality
report page) -> word error rate against the spoken text."""

from __future__ import annotations

import importlib
from pathlib import Path

import pyarrow.parquet as pq

from asrd import config as config_mod
from asrd.index import build_index
from asrd.merge import merge
from asrd.plan import make_plan
from asrd.report import REPORT_NAME

INSTALL_HINT = "pip install 'asrd[demo]' (or: bash scripts/bootstrap.sh demo)"


class DemoUnavailable(RuntimeError):
    """A package the demo needs is not installed."""


def require_demo_extra() -> None:
    """The word error rate needs jiwer (the `demo` extra): fail before the pipeline starts,
    not after it ran."""
    try:
        importlib.import_module("jiwer")
    except ImportError as e:
        raise DemoUnavailable(f"asrd demo needs the `demo` extra (jiwer, for the word error "
                              f"rate), which is not installed ({e}): {INSTALL_HINT}") from None


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                          jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    return jiwer.wer(refs, hyps, reference_transform=norm, hypothesis_transform=norm)


def run_demo(workdir: Path, overrides: list[str] | None = None,
             config_file: str | None = None) -> int:
    """Sample speech -> index -> run -> merge -> WER, with `config_file` (`-c`) and `overrides`
    layered as for every command; the demo sets only the index, run directory, name and shards."""
    require_demo_extra()
    from asrd.runtime.task import run_task  # Ray and the engines: only once the demo can finish
    from asrd.speech_samples import make_corpus

    workdir = workdir.resolve()
    manifest = workdir / "audio" / "manifest.jsonl"
    if not manifest.is_file():
        print(f"making sample speech in {manifest.parent}")
        make_corpus(manifest.parent, n=8, with_non_speech=True)
    index = workdir / "index.parquet"
    report = build_index(manifest, index)
    print(f"indexed {report.rows} recordings, {report.audio_s:.0f} s of speech")
    cfg = config_mod.load(config_file, [f"run.index={index}", f"run.dir={workdir / 'run'}",
                                 "run.name=demo", "run.num_shards=2", *(overrides or [])])
    rd, plan = make_plan(cfg)
    run_task(rd.path, None, overrides)
    summary = merge(rd.config(None, overrides, check_drift=False))
    # every row, as the shard files hold them (the merged dataset leaves out the flagged ones)
    table = pq.ParquetDataset([rd.shard_file(s) for s in range(plan.num_shards)]).read()
    rows = table.sort_by("row").to_pylist()
    speech = [r for r in rows if r["error"] is None and r["reference"]]
    wer = word_error_rate([r["reference"] for r in speech], [r["text"] for r in speech])
    for r in rows:
        shown = r["text"] if r["error"] is None else "ERROR " + r["error"]
        flags = f"  [flags: {', '.join(r['flags'])}]" if r.get("flags") else ""
        print(f"  {r['id']:<14} {r['speech_s'] or 0:5.1f} s speech  {shown or '(no words)'}"
              f"{flags}")
    silent = [r for r in rows if r["error"] is None and not r["reference"]]
    if silent:
        words = sum(len((r["text"] or "").split()) for r in silent)
        print(f"words written on {len(silent)} recordings without speech: {words}")
    print(f"merged {summary.rows} rows ({summary.ok} ok, {summary.failed} failed) into "
          f"{rd.merged_dir}; quality preset {summary.preset!r} kept {summary.kept}, dropped "
          f"{summary.dropped_by_preset} ("
          + ", ".join(f"{k} {v}" for k, v in summary.dropped_by_flag.items()) + ")")
    print(f"quality report: {rd.merged_dir / REPORT_NAME}")
    print(f"word error rate against the spoken text: {wer:.1%}")
    return 0 if summary.failed == 0 else 1
